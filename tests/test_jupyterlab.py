"""JupyterLab reads the MyST chapters as they are: jupyterlab-myst renders their markdown, and Jupytext's contents
manager opens chapters/NN-slug.md as a notebook. Tested with a real `jupyter server`: open a chapter through the
contents API and run one of its cells through a kernel over the server's websocket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from sync_notebooks import notebook_from_markdown  # noqa: E402

CHAPTER = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))[0]
JUPYTER = Path(sys.executable).parent / "jupyter"


def test_myst_and_jupytext_lab_extensions_are_enabled_and_compatible():
    listing = subprocess.run([str(JUPYTER), "labextension", "list"], capture_output=True, text=True, check=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    for extension in ["jupyterlab-myst", "jupyterlab-jupytext"]:
        line = next((line for line in text.splitlines() if line.strip().startswith(extension)), None)
        assert line and "enabled" in line and " OK" in line, f"{extension} is not enabled and compatible:\n{text}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {url.split('?')[0]}: {error.code} {error.read().decode()[:2000]}") from None


@pytest.fixture
def server(tmp_path: Path):
    """A jupyter server on the repository, on a free local port, with its own runtime folder; stopped afterwards."""
    if not JUPYTER.exists() or shutil.which("jupyter-server", path=str(JUPYTER.parent)) is None:
        pytest.skip("jupyter server is not installed in this environment (pip install -e '.[dev]')")
    port, token = _free_port(), uuid.uuid4().hex
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_TOKEN": token}
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [str(JUPYTER), "server", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.root_dir={ROOT}", "--ServerApp.port_retries=0", "--ServerApp.allow_root=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.5)
        else:
            pytest.fail("jupyter server did not answer within 60 s")
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        yield base, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


async def _execute(base: str, token: str, kernel_id: str, code: str) -> tuple[str, str]:
    """Send one execute_request over the kernel's websocket; (status of the reply, text printed on stdout)."""
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(f"{base.replace('http', 'ws')}/api/kernels/{kernel_id}/channels?token={token}")
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))  # fmt: skip
    status, stdout, idle = None, "", False
    while status is None or not idle:  # the reply (shell) and the kernel going idle (iopub) both arrive
        raw = await asyncio.wait_for(ws.read_message(), timeout=120)
        assert raw is not None, "the kernel's websocket closed"
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "execute_reply":
            status = msg["content"]["status"]
            if status != "ok":
                stdout += f"{msg['content'].get('ename')}: {msg['content'].get('evalue')}"
        elif msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            stdout += msg["content"]["text"]
        elif msg["msg_type"] == "status":
            idle = msg["content"]["execution_state"] == "idle"
    ws.close()
    return status, stdout


def test_a_chapter_opens_as_a_notebook_and_its_cell_runs(server):
    base, token = server
    path = f"chapters/{CHAPTER.name}"
    model = _get(f"{base}/api/contents/{path}?type=notebook&content=1&token={token}")
    assert model["type"] == "notebook", f"{path} did not open as a notebook: {model.get('type')}"
    cells = model["content"]["cells"]
    expected = [c for c in notebook_from_markdown(CHAPTER).cells]
    assert [(c["cell_type"], c["source"]) for c in cells] == [(c.cell_type, c.source) for c in expected]
    code = [c["source"] for c in cells if c["cell_type"] == "code"]
    kernel = _get(f"{base}/api/kernels?token={token}", method="POST", body={"name": "python3"})
    try:
        # The chapter's imports cell (its second code cell), then a line that shows what it defined.
        status, stdout = asyncio.run(
            _execute(base, token, kernel["id"], code[1] + "\nprint('attnbook', attnbook.__name__, torch.__version__)")
        )
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE"), timeout=60
        )
    assert status == "ok", stdout
    assert stdout.strip().splitlines()[-1].startswith("attnbook attnbook 2."), stdout
