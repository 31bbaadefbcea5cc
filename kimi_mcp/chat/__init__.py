"""The chat layer: what the tools do, as plain async code without MCP.

    service        `ChatService`: tool arguments -> a checked `ChatRequest`; one upstream call
    conversations  `Conversations`: stored history in, one exchange out; the store's only user
    generations    answers that run in the background and outlive a host's deadline
    json_answers   kimi_json: JSON mode, tolerant parsing, schema check, one repair
    schemas        a caller's JSON Schema, checked and applied in a worker process within a deadline
    progress       what a progress notification says, and how often
    attachments    the local files and images a call attaches: where the server may read, and how
    tasks          tool calls run as MCP tasks, recorded durably in the store
    tools          `ChatTools`: one method per tool, the entry point for the MCP layer and the CLI

May import: `kimi_mcp.upstream`, `kimi_mcp.store`, and the root modules (errors, catalogue,
settings, telemetry, ...). Never `kimi_mcp.server`, `kimi_mcp.cli` or the MCP SDK.
"""

from .attachments import Attachments, ReadScope
from .conversations import ChatTurn, Conversations
from .generations import Generation, Generations
from .json_answers import JsonOutcome
from .progress import ProgressSink, ProgressThrottle, StreamListener
from .schemas import SchemaChecker
from .service import ChatArgs, ChatService, Completed, empty_answer_notice
from .tasks import TaskFailure, TaskLimits, TaskRecorder, Tasks, TaskStarted, TaskView
from .tools import LOCAL, ChatHandover, ChatTools, Finished, Partial, Relayed

__all__ = [
    "LOCAL",
    "Attachments",
    "ChatArgs",
    "ChatHandover",
    "ChatService",
    "ChatTools",
    "ChatTurn",
    "Completed",
    "Conversations",
    "Finished",
    "Generation",
    "Generations",
    "JsonOutcome",
    "Partial",
    "ProgressSink",
    "ProgressThrottle",
    "ReadScope",
    "Relayed",
    "SchemaChecker",
    "StreamListener",
    "TaskFailure",
    "TaskLimits",
    "TaskRecorder",
    "TaskStarted",
    "TaskView",
    "Tasks",
    "empty_answer_notice",
]
