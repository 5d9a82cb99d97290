"""Where a training process's memory goes: peak resident memory (RSS) of the gpt-quick model's training, stage
by stage, for a minimal loop and for attnbook's engine, and the size of each checkpoint file.

Each stage runs in a fresh interpreter and reports its peak RSS (``ru_maxrss``): ``python`` (the interpreter
alone), ``torch`` (``import torch``), ``lightning`` (``import lightning.pytorch``, which the engine needs),
``minimal loop`` (torch, the corpus and ``--steps`` steps of the GPT with AdamW in a hand-written loop on
random-offset batches, no Lightning) and
``engine`` (``--steps`` steps through the engine as ``attnbook fit`` builds it: CSV and TensorBoard loggers,
checkpoints every epoch). The differences say what the engine's extra memory is made of; the checkpoint sizes
show what a resumable ``last.ckpt`` holds beside the weights-only ``best.ckpt``.

    PYTHONPATH=. python benchmarks/memory.py --steps 50
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

_STAGES = {
    "python": "pass",
    "torch": "import torch",
    "lightning": "import lightning.pytorch",
    "minimal loop": """
import torch
torch.set_num_threads(1)
from attnbook.data.text import CharTokenizer, load_stdlib_corpus
from attnbook.models.gpt import GPT, GPTConfig
text = load_stdlib_corpus(300_000)
tokenizer = CharTokenizer.from_text(text)
data = tokenizer.encode(text)
net = GPT(GPTConfig(tokenizer.vocab_size, activation="gelu"))
optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
for _ in range({steps}):
    starts = torch.randint(len(data) - 65, (12,)).tolist()
    windows = torch.stack([data[s : s + 65] for s in starts])
    x, y = windows[:, :-1], windows[:, 1:]
    _, loss = net(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
""",
    "engine": """
import torch, logging
torch.set_num_threads(1)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
from attnbook.cli import main
main(["fit", "--config", "gpt-quick", "--engine.run_dir", {run_dir!r}, "--trainer.max_epochs", "1",
      "--data.init_args.batches_per_epoch", "{steps}", "--engine.progress_bar", "false"])
""",
}


def peak_rss_mb(code: str) -> float:
    probe = f"{code}\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        print(f"{'stage':<14} {'peak RSS MB':>12}")
        for name, code in _STAGES.items():
            mb = peak_rss_mb(code.format(steps=args.steps, run_dir=str(Path(run_dir) / "run")))
            print(f"{name:<14} {mb:12.0f}", flush=True)
        for path in sorted((Path(run_dir) / "run" / "checkpoints").glob("*.ckpt")):
            print(f"checkpoint {path.name:<10} {path.stat().st_size / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
