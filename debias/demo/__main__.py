"""`python -m debias.demo build [--cache-dir D] [KEY=VALUE ...]`: build (or find) the demo suite.

Reads conf/data/demo.yaml and conf/model/pythia-demo.yaml; KEY=VALUE overrides use their dotted
paths, e.g. `data.geometry.total_steps=100 model.architecture.num_layers=2`. Prints the suite's
folder and a summary of what it holds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from debias.errors import UserError, exit_on_user_error

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def load_config(cache_dir: str, overrides: list[str], model: str = "pythia-demo"):
    from omegaconf import OmegaConf

    data_file, model_file = CONF_DIR / "data" / "demo.yaml", CONF_DIR / "model" / f"{model}.yaml"
    for path in (data_file, model_file):
        if not path.is_file():
            raise UserError(f"{path}: not found; run from a checkout of the project (or pass --model)")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"overrides {bad}: write them as KEY=VALUE, e.g. data.geometry.total_steps=100")
    root = OmegaConf.create({"data": OmegaConf.load(data_file), "model": OmegaConf.load(model_file),
                             "cache_dir": cache_dir})
    return OmegaConf.merge(root, OmegaConf.from_dotlist(overrides))


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m debias.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the demo suite (cached: a second call only prints it)")
    build.add_argument("--cache-dir", default=os.environ.get("DEBIAS_CACHE_DIR", ".cache/debias"))
    build.add_argument("--model", default="pythia-demo", help="model preset in conf/model (default pythia-demo)")
    build.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = parser.parse_args(argv)

    from debias.demo.build import build_demo_suite

    cfg = load_config(args.cache_dir, args.overrides, args.model)
    suite = build_demo_suite(cfg.data.demo)
    print(json.dumps({"root": str(suite.root), "key": suite.key, "tokenizer": str(suite.tokenizer),
                      "stream": str(suite.stream), "checkpoints": f"{len(suite.checkpoint_steps)} folders in "
                      f"{suite.checkpoints}", "heldout_rows": list(suite.heldout_rows),
                      "winobias_dir": str(suite.winobias_dir), "crows_pairs_csv": str(suite.crows_pairs_csv),
                      "geometry": suite.geometry}, indent=2))


if __name__ == "__main__":
    main()
