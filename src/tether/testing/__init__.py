"""Public test helpers: a scripted OpenAI-compatible model server and history readers."""

from tether.testing._history import HistoryStats, StepRecord, history_stats
from tether.testing._model_server import (
    Fault,
    RecordedRequest,
    Script,
    ScriptedModelServer,
    ToolCall,
    Turn,
    Usage,
    turn_index,
)
from tether.testing._workers import WorkerProcess, worker_processes

__all__ = [
    "Fault",
    "HistoryStats",
    "RecordedRequest",
    "Script",
    "ScriptedModelServer",
    "StepRecord",
    "ToolCall",
    "Turn",
    "Usage",
    "WorkerProcess",
    "history_stats",
    "turn_index",
    "worker_processes",
]
