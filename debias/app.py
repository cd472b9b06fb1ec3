"""The Hydra application around the pipelines (pipelines/intervene.py, pipelines/evaluate.py).

    if __name__ == "__main__":
        hydra_app("config", job)()   # conf/config.yaml composed; job(cfg, run_dir) does the work

- Bad settings end in one line on stderr and exit status 2: Hydra prints its composition errors
  as a page of text and exits 1; with HYDRA_FULL_ERROR it raises them instead, and
  `config_error_line` makes each one line naming the setting, what is wrong and the fix (the
  nearest valid keys, the allowed presets, how to quote `{step}`).
- Nothing is left behind by a refused run: `refused_runs_leave_nothing` removes the run folder
  Hydra made before the settings were checked; `SweepDirectoryRecorder` lets a refused sweep
  remove its sweep folder.
- Run folders are unique: conf/config.yaml names them through the `unique_dir` resolver, which
  appends _2, _3, ... when two runs start in the same second.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from debias.config import one_line, register_configs, schema_class, unknown_key_line
from debias.errors import EXIT_BAD_INPUT, UserError, exit_on_user_error

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def hydra_app(config_name: str, job: Callable[[DictConfig, Path], None]) -> Callable[[], Any]:
    """The entry point of a pipeline: Hydra composes conf/<config_name>.yaml (command-line overrides,
    sweeps, launchers as usual) and each job runs `job(cfg, run_dir)` in its run folder. A UserError
    anywhere ends in one line on stderr and exit status 2, and leaves no run folder behind. The job
    name (run folders' log file, Hydra's job records) is `hydra.job.name` in that config file."""

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    @exit_on_user_error
    def main(cfg: DictConfig) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        with refused_runs_leave_nothing(run_dir):
            job(cfg, run_dir)

    return lambda: run_hydra_app(main)


def register() -> None:
    """The schema and the `unique_dir` resolver, before Hydra composes."""
    register_configs()
    OmegaConf.register_new_resolver("unique_dir", claim_unique_dir, use_cache=True, replace=True)


def claim_unique_dir(path: str) -> str:
    """`path`, or `path_2`, `path_3`, ... when it exists: two runs started in the same second get a
    folder each. The folder is created here (mkdir is atomic), so the name is claimed at once."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


@contextlib.contextmanager
def refused_runs_leave_nothing(run_dir: Path) -> Iterator[None]:
    """Hydra makes the run folder before the settings are checked: a run refused for bad input
    removes it again (everything it built is in the cache, keyed by content)."""
    try:
        yield
    except UserError:
        if not (run_dir / "report.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def run_hydra_app(main: Callable[[], Any], argv: Optional[list[str]] = None) -> Any:
    """Call a `@hydra.main` function so that bad settings end in one line on stderr and exit 2.

    Hydra prints composition errors as a page of text and exits 1; with HYDRA_FULL_ERROR it raises
    them instead, and here they become one line (`config_error_line`).
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return main()
    except UserError as err:
        message = str(err)
    except (HydraException, OmegaConfBaseException) as err:
        message = config_error_line(err, sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:  # a job refused its settings: its line is printed, its run folder gone
        if stop.code == EXIT_BAD_INPUT:
            _remove_empty_sweep_dir()
        raise
    _remove_empty_sweep_dir()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


_SWEEP_DIRS: list[Path] = []  # sweep folders this process started (SweepDirectoryRecorder)


class SweepDirectoryRecorder(Callback):
    """Hydra callback (conf/config.yaml, conf/evaluate.yaml): remembers the sweep folder, which Hydra
    creates with multirun.yaml before it composes the jobs, so a refused sweep leaves nothing (a
    folder that holds any job's output stays)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _SWEEP_DIRS.append(Path(str(config.hydra.sweep.dir)))


def _remove_empty_sweep_dir() -> None:
    for sweep_dir in _SWEEP_DIRS:
        if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml"}:
            shutil.rmtree(sweep_dir, ignore_errors=True)


def config_error_line(err: BaseException, argv: list[str]) -> str:
    """One line for a Hydra/OmegaConf composition error: the setting, what is wrong, the fix."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, choice = str(err.missing_cfg_file).rpartition("/")
        allowed = ", ".join(o for o in (err.options or []) if not o.startswith("schema"))
        return f"{group}={choice}: no preset conf/{group}/{choice}.yaml; allowed: {allowed}"
    if isinstance(err, OverrideParseException):
        culprit = _unparsable_override(argv)
        if culprit and "{" in culprit:
            key, _, value = culprit.partition("=")
            return (f"{culprit}: Hydra reads {{...}} on the command line as a dictionary; quote the value "
                    f"inside the shell's quotes: '{key}=\"{value}\"'")
        return f"{culprit or 'override'}: not a valid override ({text.splitlines()[0]}); write KEY=VALUE"
    ambiguous = re.match(r"Ambiguous value for argument '([^']*)'", text)
    if ambiguous:
        return (f"{ambiguous.group(1)}: several values; add --multirun to sweep over them, "
                f"or quote the value to pass it as one string")
    existing = re.match(r"Could not append to config\. An item is already at '([^']+)'", text)
    if existing:  # e.g. +plan=true: `+` adds a key the schema does not have; this one it has
        given = next((a.lstrip("+") for a in argv if a.lstrip("+").startswith(f"{existing.group(1)}=")), None)
        return f"+{existing.group(1)}: already a setting; write {given or existing.group(1) + '=VALUE'} without the +"
    cause = err.__cause__ if isinstance(err.__cause__, Exception) else None
    override = re.match(r"(?:Could not override|Could not append to config|Error merging override) '?([^'\s]+)'?", text)
    preset = re.match(r"In '([^']+)': (\w+) raised while composing config:\n(.*)", text, flags=re.S)
    source = f"conf/{preset.group(1)}.yaml: " if preset else ""
    detail = cause if cause is not None else err
    full_key = getattr(detail, "full_key", None) or _field(text, "full_key")
    unknown = re.search(r"Key '([^']+)' (?:not in|is not in struct)", str(detail))
    if unknown and full_key:
        object_type = getattr(detail, "object_type", None) or schema_class(_field(text, "object_type") or "")
        return source + unknown_key_line(full_key, object_type, getattr(detail, "parent_node", None))
    if override:
        return _type_hint(f"{override.group(1)}: {_first_line(detail)}")
    if full_key:
        return _type_hint(f"{source}{full_key}: {_first_line(detail if cause else _inner(text, preset))}")
    return source + one_line(err)


_EXPECTED_TYPE = re.compile(r"could not be converted to (\w+)|is not a valid (bool)")
_TYPE_FIX = {"Integer": "a whole number", "Float": "a number", "bool": "true or false"}


def _type_hint(line: str) -> str:
    """OmegaConf names the type a value could not become; say what to write instead."""
    expected = _EXPECTED_TYPE.search(line)
    kind = expected and (expected.group(1) or expected.group(2))
    return f"{line}; give {_TYPE_FIX[kind]}" if kind in _TYPE_FIX else line


def _unparsable_override(argv: list[str]) -> Optional[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except Exception:
            return arg
    return None


def _field(text: str, name: str) -> Optional[str]:
    match = re.search(rf"^\s*{name}(?:: |=)(\S+)", text, flags=re.M)
    return match.group(1) if match else None


def _inner(text: str, preset) -> str:
    return preset.group(3) if preset else text


def _first_line(err: Any) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


