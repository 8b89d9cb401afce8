"""The engine as the views see it: typed calls and dataclass results.

Views import the engine only through this package (tests/test_layering.py checks): the engine's types and
helpers they use are named here, the calls live by concern in its modules (library, quantize, chat,
evaluation) and are named here too, so a view reads ``services.x`` whichever module ``x`` lives in (a test
that replaces one patches the module that calls it). Functions that take a ``reporter`` run in a worker
thread (:func:`app.jobs.run_in_thread`), never on the UI thread; streamed pieces go to ``reporter.emit``.
"""

from __future__ import annotations

from engine.analysis.compare import token_pieces  # noqa: F401  (the text each generated token added)
from engine.analysis.stats import LayerSummary, StatsReport, TensorStats, layer_of  # noqa: F401  (Analysis reads these)
from engine.core.errors import NibbleError  # noqa: F401  (views catch it)
from engine.core.units import format_kld, human_bytes  # noqa: F401  (the one byte and KLD formatters)
from engine.estimate import AwqCost, Estimate, ModelPlan, awq_cost, estimate  # noqa: F401
from engine.estimate import context_choices  # noqa: F401  (the wizard's context list)
from engine.estimate.timing import ImatrixTime, imatrix_time, measured_flops  # noqa: F401
from engine.gguf.imatrix import WINDOW_TOKENS  # noqa: F401  (what importance matrix windows hold)
from engine.pipelines.queue import output_name  # noqa: F401  (the one rule for naming outputs)
from engine.gguf.types import QuantType  # noqa: F401  (the wizard's type list holds these)
from engine.hub import (  # noqa: F401
    CachedModel,
    HubModel,
    converted_families,
    download_model,
    list_cached_models,
    model_details,
    requantizable_gguf,
    search_models,
)
from engine.models.library import Entry as LibraryEntry  # noqa: F401  (the library's rows)
from engine.models import resolve as _resolve
from engine.models.resolve import AWQ, GGUF, MODEL_KINDS, ORIGINAL, model_kind  # noqa: F401
from engine.runtime.chat import ChatSettings, Conversation, ReplyFigures  # noqa: F401
from engine.runtime.conversations import (  # noqa: F401  (Chat saves and reopens conversations)
    SavedConversation,
    delete_conversation,
    list_conversations,
    load_conversation,
    save_conversation,
)

from app.services.library import (  # noqa: F401  (models, the library, handing outputs on)
    kind_of,
    demo_dir,
    library_entries,
    record_in_library,
    library_file,
    library_entry,
    forget_model,
    why_not_deletable,
    delete_model,
    parse_split_size,
    publish,
    use_in_ollama,
    use_in_lmstudio,
)

from app.services.quantize import (  # noqa: F401  (the Quantize wizard)
    load_plan,
    gguf_types,
    outputs_dir,
    inside_install,
    sizable_types,
    CalibrationText,
    calibration_text,
    calibration_count_command,
    fit_samples,
    check_outputs,
    estimate_or_error,
    QuantizeOutcome,
    MixPreview,
    mix_size_range,
    mix_fitting_budget,
    preview_mix,
    check_mix,
)

from app.services.chat import (  # noqa: F401  (Chat)
    open_model,
    AUTO_GPU_LAYERS,
    LoadedModel,
    load_chat_model,
    loaded_model,
    context_in_use,
    close_model,
    chat_reply,
)

from app.services.evaluation import (  # noqa: F401  (Compare and Analysis)
    CompareSide,
    CompareOutcome,
    compare,
    EvalFigures,
    list_tensors,
    comparison_basis,
    tensor_stats,
    model_stats,
    run_task_set,
    run_context_sweep,
    compare_speed,
    KV_CACHE_TYPES,
    gguf_type,
    sweep_plan,
    run_kv_sweeps,
)

_resolve.NAMES_FROM_CHILD = True  # reading a model's plan in a worker thread must not import torch here
