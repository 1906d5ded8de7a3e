"""dlutils.sandbox: the stand-ins the documentation starts, and what stop_all gives back."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

from dlutils import hf_download, http_download, sandbox


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_stand_ins_serve_the_demo_data_and_stop_all_undoes_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example")
    monkeypatch.setenv("HF_TOKEN", "hf_users_own_token")
    server = sandbox.web_server()
    hub = sandbox.hub()
    try:
        path = http_download(server.url + "/data/table.csv", tmp_path / "t.csv")
        assert sha(open(path, "rb").read()) == sha(sandbox.WEB_FILES["data/table.csv"])
        model = hf_download("demo/tiny-model", "model.safetensors", tmp_path / "m")
        assert sha(open(model, "rb").read()) == sha(sandbox.HF_MODEL_FILES["model.safetensors"])
        assert sandbox.files(tmp_path / "m") == ["model.safetensors"]

        assert os.environ["HF_ENDPOINT"] == hub.url and "HF_TOKEN" not in os.environ
    finally:
        sandbox.stop_all()

    assert os.environ["HF_ENDPOINT"] == "https://mirror.example"
    assert os.environ["HF_TOKEN"] == "hf_users_own_token"
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/data/table.csv", timeout=5)
    sandbox.stop_all()  # nothing left: does nothing
