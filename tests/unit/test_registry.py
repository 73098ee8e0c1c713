"""The plugin registry imports a plugin when its type is first asked for, not before."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from tests.support import python_child

from sluiceway.config import SpecError
from sluiceway.core.errors import ConfigError
from sluiceway.plugins import Registry

_CHILD = textwrap.dedent(
    """
    import importlib.metadata, json, sys

    scans = 0
    plain = importlib.metadata.entry_points

    def counting(**selection):
        global scans
        caller = sys._getframe(1).f_globals.get("__name__", "")
        scans += caller.startswith("sluiceway")
        return plain(**selection)

    importlib.metadata.entry_points = counting
    from sluiceway.config import load_spec

    spec, _ = load_spec(sys.argv[1])
    connectors = sorted(
        name for name in sys.modules
        if name.startswith(("sluiceway.connectors.", "sluiceway.quality.", "sluiceway.engines."))
        and name.count(".") == 2
    )
    print(json.dumps({"source": spec.source.type, "scans": scans, "imported": connectors}))
    """
)


def test_a_spec_imports_only_the_plugins_it_names(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "version: 1\nname: lazy\nsource: {type: csv, path: in.csv}\n"
        "sink: {type: parquet, path: out}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    result = json.loads(python_child(_CHILD, str(spec), env=env).splitlines()[-1])
    assert result["source"] == "csv"
    assert result["scans"] == 1  # one pass over the installed distributions (ours)
    others = {
        "sluiceway.connectors.postgres",
        "sluiceway.connectors.s3",
        "sluiceway.connectors.kafka",
        "sluiceway.connectors.rest",
        "sluiceway.connectors.delta",
        "sluiceway.connectors.duckdb",
        "sluiceway.engines.transforms",
        "sluiceway.quality.expectations",
        "sluiceway.quality.pandera",
        "sluiceway.quality.great_expectations",
        "sluiceway.quality.soda",
    }
    assert "sluiceway.connectors.files" in result["imported"]
    assert others.isdisjoint(result["imported"]), result["imported"]


def _site(tmp_path: Path, entry_points: str, modules: dict[str, str]) -> Path:
    """A folder with one installed distribution publishing ``entry_points``."""
    site = tmp_path / "site"
    dist = site / "lazy_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lazy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for name, code in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(code))
    return site


_PLUGIN = """
    from typing import Literal
    from sluiceway.plugins import Plugin, StageConfig

    class Config(StageConfig):
        type: Literal["{type}"]

    SINK = Plugin(kind="sink", type="{type}", config=Config, build=lambda c, ctx: None)
"""


def test_entry_points_load_on_first_use_and_broken_ones_only_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(
        tmp_path,
        "[sluiceway.sinks]\n"
        "lazy-one = lazy_one:SINK\n"
        "other-name = lazy_two:SINK\n"
        "lazy-broken = no_such_module_for_lazy:SINK\n",
        {
            "lazy_one": _PLUGIN.format(type="lazy-one"),
            "lazy_two": _PLUGIN.format(type="lazy-two"),
        },
    )
    monkeypatch.syspath_prepend(str(site))
    registry = Registry()
    assert {"lazy-one", "other-name", "lazy-broken"} <= set(registry.names("sink"))
    assert "lazy_one" not in sys.modules and "lazy_two" not in sys.modules

    assert registry.get("sink", "lazy-one").type == "lazy-one"
    assert "lazy_one" in sys.modules and "lazy_two" not in sys.modules

    # Published under another name than its type: found once the kind is read whole.
    assert registry.get("sink", "lazy-two").type == "lazy-two"

    with pytest.raises(ConfigError, match="failed to load: no_such_module_for_lazy:SINK"):
        registry.get("sink", "lazy-broken")
    assert "no_such_module_for_lazy" in registry.broken[("sink", "lazy-broken")]

    # A spec naming the broken type is told so; one naming a good type validates.
    from sluiceway.config import parse_spec

    base = "version: 1\nname: p\nsource: {type: csv, path: in.csv}\n"
    with pytest.raises(SpecError, match="'lazy-broken' is installed but failed to load"):
        parse_spec(base + "sink: {type: lazy-broken}\n", registry=Registry())
    assert parse_spec(base + "sink: {type: lazy-one}\n", registry=Registry()).sink.type == (
        "lazy-one"
    )


def test_registered_code_plugins_win_over_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(
        tmp_path,
        "[sluiceway.sinks]\nlazy-three = lazy_three:SINK\n",
        {"lazy_three": _PLUGIN.format(type="lazy-three")},
    )
    monkeypatch.syspath_prepend(str(site))
    base = Registry()
    code = base.get("sink", "parquet")
    own = type(code)(kind="sink", type="lazy-three", config=code.config, build=code.build)
    registry = Registry([own])
    assert registry.get("sink", "lazy-three") is own
    assert "lazy_three" not in sys.modules

    # extend() carries entry points not imported yet, still not imported.
    copy = Registry(entry_points=False)
    copy.extend(base)
    assert "lazy-three" in copy.names("sink") and "lazy_three" not in sys.modules
    assert copy.get("sink", "lazy-three").type == "lazy-three"
