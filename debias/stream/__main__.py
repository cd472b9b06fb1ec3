from debias.stream.cli import main

main()
