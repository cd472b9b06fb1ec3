"""`python -m debias.demo build [--cache-dir D] [--model M] [KEY=VALUE ...]`: build (or find) the demo suite.

Composes conf/config.yaml with data=demo (the same settings and checks as the pipeline); KEY=VALUE
overrides use their dotted paths, e.g. `data.geometry.total_steps=100 model.architecture.num_layers=2`.
Prints the suite's folder and a summary of what it holds.
"""

from __future__ import annotations

import argparse
import json

from debias.errors import ArgumentParser, UserError, exit_on_user_error


def load_config(cache_dir: str | None, overrides: list[str], model: str = "pythia-demo"):
    """The run configuration (debias.config.RunConfig) for the demo data with these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from debias.app import CONF_DIR, config_error_line
    from debias.config import register_configs, to_run_config

    if not (CONF_DIR / "config.yaml").is_file():
        raise UserError(f"{CONF_DIR}: no config.yaml; run from a checkout of the project")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"overrides {bad}: write them as KEY=VALUE, e.g. data.geometry.total_steps=100")
    register_configs()
    everything = [f"model={model}", "data=demo", *([f"cache_dir={cache_dir}"] if cache_dir else []), *overrides]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return to_run_config(compose("config", overrides=everything))
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(config_error_line(err, everything)) from None


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m debias.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the demo suite (cached: a second call only prints it)")
    build.add_argument("--cache-dir", default=None, help="default: $DEBIAS_CACHE_DIR or .cache/debias")
    build.add_argument("--model", default="pythia-demo", help="model preset in conf/model (default pythia-demo)")
    build.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = parser.parse_args(argv)

    from debias.demo.build import build_demo_suite

    config = load_config(args.cache_dir, args.overrides, args.model)
    suite = build_demo_suite(config.data.demo)
    print(json.dumps({"root": str(suite.root), "key": suite.key, "tokenizer": str(suite.tokenizer),
                      "stream": str(suite.stream), "checkpoints": f"{len(suite.checkpoint_steps)} folders in "
                      f"{suite.checkpoints}", "heldout_rows": list(suite.heldout_rows),
                      "winobias_dir": str(suite.winobias_dir), "crows_pairs_csv": str(suite.crows_pairs_csv),
                      "geometry": suite.geometry}, indent=2))


if __name__ == "__main__":
    main()
