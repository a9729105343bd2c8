"""Attaching to a Ray cluster, and the one Ray head a sweep's runs share."""

from __future__ import annotations

import os

import pytest
from omegaconf import DictConfig

from strategies.ray_cluster import (
    RAY_ADDRESS_ENV,
    RayHead,
    SharedRayHead,
    check_reachable,
    free_port,
)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                if text.encode() in cmdline.read():
                    found.append(int(entry.name))
        except OSError:  # exited meanwhile
            continue
    return found


def test_an_address_nobody_listens_at_fails_at_once() -> None:
    with pytest.raises(OSError):
        check_reachable(f"127.0.0.1:{free_port()}")


@pytest.mark.parametrize("address", ["auto", "local", "ray://head:10001"])
def test_addresses_that_are_not_host_and_port_are_left_to_ray(address: str) -> None:
    check_reachable(address)


def test_a_head_accepts_connections_then_stops_with_everything_it_started() -> None:
    head = RayHead(num_cpus=1)
    try:
        check_reachable(head.address)
        assert _processes_mentioning(str(head.temp_dir))  # GCS, raylet, ...
    finally:
        head.stop()
    with pytest.raises(OSError):
        check_reachable(head.address)
    assert not _processes_mentioning(str(head.temp_dir))
    assert not head.temp_dir.exists()
    head.stop()  # idempotent


def test_a_sweep_shares_one_head_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    callback = SharedRayHead()
    callback.on_multirun_start(DictConfig({}))
    address = os.environ[RAY_ADDRESS_ENV]
    try:
        check_reachable(address)
    finally:
        callback.on_multirun_end(DictConfig({}))
    assert RAY_ADDRESS_ENV not in os.environ
    with pytest.raises(OSError):
        check_reachable(address)


def test_a_sweep_on_a_users_cluster_starts_no_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RAY_ADDRESS_ENV, "10.0.0.1:6379")
    callback = SharedRayHead()
    callback.on_multirun_start(DictConfig({}))
    callback.on_multirun_end(DictConfig({}))
    assert os.environ[RAY_ADDRESS_ENV] == "10.0.0.1:6379"
