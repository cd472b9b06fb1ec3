"""The embedded demo: a miniature Pythia suite built from a generated corpus with a known skew.

    from debias.demo import build_demo_suite
    suite = build_demo_suite(config.data.demo)  # a debias.config.DemoConfig; cached by content under cache_dir
    suite.checkpoint(930), suite.stream, suite.tokenizer, suite.eval_config(config.eval)

`python -m debias.demo build [--cache-dir D]` builds it from conf/data/demo.yaml and
conf/model/pythia-demo.yaml.
"""

from debias.demo.build import DemoSuite, build_demo_suite, checkpoint_steps

__all__ = ["DemoSuite", "build_demo_suite", "checkpoint_steps"]
