"""Fetch the pre-shuffled Pythia streams from the Hugging Face hub (about 600 GB each)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from debias.errors import UserError

HUB_REPOS = {
    "deduped": "EleutherAI/pile-deduped-pythia-preshuffled",
    "standard": "EleutherAI/pile-standard-pythia-preshuffled",
}


def download_stream(repo: str, local_dir: str | os.PathLike, index_only: bool = False) -> Path:
    """Download `document.idx` and the byte shards (read in place, no merge); return the prefix.

    `repo` is `deduped`, `standard` or a hub dataset id. Partial downloads resume on a rerun.
    """
    from huggingface_hub import snapshot_download

    repo = HUB_REPOS.get(repo, repo)
    local_dir = Path(local_dir)
    created = not local_dir.exists()
    try:
        snapshot_download(repo_id=repo, repo_type="dataset", local_dir=local_dir,
                          allow_patterns=["*.idx"] if index_only else ["*.idx", "*.bin"])
    except Exception as err:  # network, authentication, offline mode: all end the same way
        if created and not any(local_dir.rglob("*.idx")) and not any(local_dir.rglob("*.bin")):
            shutil.rmtree(local_dir, ignore_errors=True)
        raise UserError(f"{repo}: download failed ({type(err).__name__}); download ahead of time on a "
                        f"machine with network: `hf download {repo} --repo-type dataset "
                        f"--local-dir DIR` (about 600 GB; add --include '*.idx' for the index alone), "
                        f"then set data.stream=DIR/document") from None
    indexes = sorted(local_dir.rglob("*.idx"))
    if not indexes:
        raise UserError(f"{repo}: no .idx file in the download at {local_dir}; is this a stream repository?")
    return indexes[0].with_suffix("")
