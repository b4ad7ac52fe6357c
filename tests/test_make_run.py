"""`make run` end to end: the launcher brings up PostgreSQL, Temporal, worker and API on the
embedded defaults, the README's event works, Ctrl-C stops every child, and a restart finds
the same data and the same sleeping workflows."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from google.protobuf import json_format
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from contracts.carts import CartState
from contracts.names import STATE_QUERY
from services.platform.payload_codec import EncryptionCodec, converter_with
from tests.conftest import free_port
from tests.factories import eventually

ROOT = Path(__file__).resolve().parent.parent
# The README's example, stamped two hours ago: recent enough to start a cart (an event more
# than SUTRA_EVENT_LATE_AFTER old starts nothing), idle long enough to be abandoned.
EXAMPLE = {
    **json.loads((ROOT / "examples" / "cart_updated.json").read_text()),
    "occurred_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
}


class Launch:
    def __init__(self, var: Path, ports: dict[str, int]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUTRA_")}
        env.pop("DATABASE_URL", None)  # the embedded PostgreSQL is what a new user gets
        env.update(
            SUTRA_VAR_DIR=str(var),
            SUTRA_API_PORT=str(ports["api"]),
            SUTRA_DEV_TEMPORAL_PORT=str(ports["temporal"]),
            SUTRA_DEV_UI_PORT=str(ports["ui"]),
            SUTRA_WORKER_METRICS_PORT=str(ports["worker_metrics"]),
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "embedded"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.key: str | None = None
        self._banner = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "Admin API key" in line:
                self.key = line.split()[-1]
                self._banner.set()
        self._banner.set()  # exited: let the waiter see it

    def wait_for_banner(self, timeout: float = 120) -> str:
        """Wait for the launcher's banner; return the admin key it prints."""
        if not self._banner.wait(timeout) or self.key is None:
            raise AssertionError("no banner:\n" + "".join(self.output))
        return self.key

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


@pytest.fixture
def launch_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    var = tmp_path / "var"
    yield (
        var,
        {
            "api": free_port(),
            "temporal": free_port(),
            "ui": free_port(),
            "worker_metrics": free_port(),
        },
    )
    # Should a launcher die without stopping its PostgreSQL, do not leave it running.
    pid_file = var / "pg" / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


async def _cart_state(address: str, var: Path, cart_id: str) -> CartState:
    # make run encrypts payloads with the key it generated: only its key reads the state.
    codec = EncryptionCodec.from_spec((var / "payload-keys").read_text().strip())
    client = await Client.connect(address, data_converter=converter_with(codec))
    return await client.get_workflow_handle(f"cart/{cart_id}").query(
        STATE_QUERY, result_type=CartState
    )


async def _ui_reads_the_customer_through_the_codec(
    http: httpx.AsyncClient, ui: str, api: str, temporal: str, var: Path, cart_id: str
) -> None:
    """The development UI is pointed at Sutra's codec endpoint, and that endpoint turns the
    encrypted payload Temporal stores into the customer data an ops person reads."""
    codec_key = (var / "codec-key").read_text().strip()
    settings = (await http.get(f"{ui}/api/v1/settings")).json()
    endpoint = settings["Codec"]["Endpoint"]
    assert endpoint == f"{api}/codec/k/{codec_key}"

    raw = await Client.connect(temporal)  # no codec: what Temporal itself holds
    history = await raw.get_workflow_handle(f"cart/{cart_id}").fetch_history()
    [stored] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert stored.metadata["encoding"] == b"binary/encrypted"
    assert b"c_1" not in stored.data

    headers = {"Origin": ui, "X-Namespace": "default"}
    preflight = await http.options(
        f"{endpoint}/decode",
        headers={**headers, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["access-control-allow-origin"] == ui
    decoded = await http.post(
        f"{endpoint}/decode",
        json={"payloads": [json_format.MessageToDict(stored)]},
        headers=headers,
    )
    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["access-control-allow-origin"] == ui
    [plain] = decoded.json()["payloads"]
    assert base64.b64decode(plain["metadata"]["encoding"]) == b"json/plain"
    assert b'"c_1"' in base64.b64decode(plain["data"])


async def _visible(address: str, cart_id: str) -> list[Any]:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    query = f"CartId = '{cart_id}' AND CustomerId = 'c_1' AND JourneyStatus = 'abandoned'"
    return [w async for w in client.list_workflows(query)]


@pytest.mark.timeout(300)
async def test_make_run_starts_everything_and_ctrl_c_stops_it(launch_env):
    var, ports = launch_env
    base = f"http://127.0.0.1:{ports['api']}"
    temporal = f"127.0.0.1:{ports['temporal']}"

    launch = Launch(var, ports)
    try:
        key = await asyncio.to_thread(launch.wait_for_banner)
    except BaseException:
        launch.interrupt()
        raise
    banner = "".join(launch.output)
    assert f"{base}/docs" in banner
    assert f"http://127.0.0.1:{ports['ui']}" in banner
    children = launch.descendants()
    assert {"temporal", "python"} <= {re.sub(r"\d.*", "", p.name()) for p in children}

    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        headers = {"Authorization": f"Bearer {key}"}
        response = await http.post("/v1/events", json=EXAMPLE, headers=headers)
        assert response.status_code == 202, response.text
        assert (await http.get("/docs")).status_code == 200
        ui = await http.get(f"http://127.0.0.1:{ports['ui']}/")
        assert ui.status_code == 200

    cart_id = EXAMPLE["data"]["cart_id"]
    state = await eventually(lambda: _cart_state(temporal, var, cart_id), what="the cart workflow")
    assert state.customer_id == "c_1"
    found = await eventually(lambda: _visible(temporal, cart_id), what="search attributes")
    assert found[0].id == f"cart/{cart_id}"
    worker_metrics = f"http://127.0.0.1:{ports['worker_metrics']}/metrics"
    assert worker_metrics in banner
    async with httpx.AsyncClient(timeout=10) as http:
        scraped = (await http.get(worker_metrics)).text
    # The worker's page: the Temporal SDK's figures of the cart's tasks beside Sutra's own.
    assert re.search(r"^temporal_workflow_task_execution_latency_seconds_count\{", scraped, re.M)
    assert "# TYPE sutra_messages_total counter" in scraped
    async with httpx.AsyncClient(timeout=10) as http:
        await _ui_reads_the_customer_through_the_codec(
            http, f"http://127.0.0.1:{ports['ui']}", base, temporal, var, cart_id
        )

    assert launch.interrupt() == 0
    await asyncio.sleep(0.5)
    assert [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert "stopped" in launch.output[-1] or "stopped" in "".join(launch.output)

    # A second start finds the same database (the event is a duplicate) and the same
    # workflow, still waiting, from ./var/temporal.db.
    again = Launch(var, ports)
    try:
        assert await asyncio.to_thread(again.wait_for_banner) == key
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            response = await http.post(
                "/v1/events", json=EXAMPLE, headers={"Authorization": f"Bearer {key}"}
            )
        assert response.status_code == 200
        assert response.json()["status"] == "duplicate"
        state = await eventually(lambda: _cart_state(temporal, var, cart_id), what="the workflow")
        assert state.status == "abandoned"
    finally:
        assert again.interrupt() == 0
