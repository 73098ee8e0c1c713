"""The curated public surface: what ``import sluiceway`` offers is pinned here."""

from __future__ import annotations

import subprocess
import sys

import sluiceway
import sluiceway.core
import sluiceway.testing


def test_top_level_exports_are_pinned() -> None:
    assert sorted(sluiceway.__all__) == sorted(
        [
            "AccountingError",
            "BaseExtractor",
            "BaseLoader",
            "BaseTransformer",
            "BaseValidator",
            "Batch",
            "BuildContext",
            "ConfigError",
            "DataError",
            "FatalError",
            "LoadResult",
            "PartitionSpan",
            "Pipeline",
            "PipelineMetrics",
            "Plugin",
            "RetryPolicy",
            "RowRejection",
            "Routed",
            "RuleResult",
            "RunFailedError",
            "SluicewayError",
            "StageConfig",
            "StageEvent",
            "TransientError",
            "ValidationReport",
            "__version__",
            "build_pipeline",
            "load_spec",
        ]
    )
    for name in sluiceway.__all__:
        assert getattr(sluiceway, name) is not None


def test_every_exported_name_exists_in_each_public_module() -> None:
    for module in (sluiceway, sluiceway.core, sluiceway.testing):
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert missing == [], module.__name__


def test_the_seed_contract_names_are_kept() -> None:
    extractor = sluiceway.BaseExtractor.__init__.__code__.co_varnames
    assert "batch_size" in extractor
    assert {"extract", "open", "replay", "acknowledge"} <= set(dir(sluiceway.BaseExtractor))
    assert "transform" in dir(sluiceway.BaseTransformer)
    assert "validate" in dir(sluiceway.BaseValidator)
    assert {"load", "committed", "commit", "finish"} <= set(dir(sluiceway.BaseLoader))
    assert "run" in dir(sluiceway.Pipeline)


def test_core_imports_no_connector_or_frame_library() -> None:
    code = (
        "import sys, sluiceway.core; "
        "heavy = [m for m in ('polars', 'duckdb', 'pandas', 'fsspec') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
