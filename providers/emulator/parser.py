"""GLM's file-parser API in the emulator: ``POST /files/parser/create`` and its text result.

provider-facts.md § Real answers ("GLM content / extraction") and docs.bigmodel.cn (工具 API:
文件解析, 解析结果): create takes multipart ``file``, ``tool_type``, ``file_type`` and answers
``{"task_id","message","success"}``; ``GET /files/parser/result/{task_id}/text`` answers
``{"status": "processing"|"succeeded"|"failed", "message", "task_id", "content"}``. The
exact live messages, and the error answers for a refused type or an unknown task, are
unverified: the ones here are 400/404 with code 1214 and a message naming 文件解析.

Each task stays ``processing`` for ``polls`` result requests, then ends ``succeeded`` with
the text ``providers.emulator.extraction.text_of`` gives (the same the content endpoint
would), or ``failed`` when its create request drew the ``parsefail`` fault.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import BodyPartReader, StreamReader, web

from providers.emulator.disposition import disposition_params
from providers.emulator.extraction import text_of
from providers.emulator.faults import Decision
from providers.emulator.multipart import CHUNK, QuietContent, Reader, drain
from providers.emulator.state import ApiError, bad_request
from providers.limits import GLM_PARSER_TYPES, MIB

__all__ = ["ParserRoutes", "ParserTask", "create_answer", "judge_parse", "result_answer"]

# docs.bigmodel.cn 文件解析: Lite reads GLM_PARSER_TYPES, Expert pdf only, Prime adds
# images and html. zhipuai 2.1.5 still names the older tools (simple, doc2x, tencent,
# zhipu-pro): accepted here with Lite's types (their live reaction is unverified).
_PRIME = GLM_PARSER_TYPES | set(
    "html bmp gif webp heic eps icns im pcx ppm tiff xbm heif jp2".split()
)
TOOL_TYPES = {
    "lite": GLM_PARSER_TYPES,
    "expert": frozenset({"pdf"}),
    "prime": frozenset(_PRIME),
    **dict.fromkeys(("simple", "doc2x", "tencent", "zhipu-pro"), GLM_PARSER_TYPES),
}
_MAX_BYTES = 100 * MIB  # GLM's API-wide cap (HTTP 435)


@dataclass
class ParserTask:
    """One parse task: its text, how many more polls answer ``processing``, its end."""

    id: str
    text: str
    polls_left: int
    fails: bool = False


def judge_parse(tool_type: str, file_type: str) -> ApiError | None:
    """Why the parser refuses to create the task, or None."""
    types = TOOL_TYPES.get(tool_type)
    if types is None:
        return bad_request("glm", f"文件解析 tool_type 不支持: {tool_type!r}")
    if file_type.lower() not in types:
        return bad_request(
            "glm", f"文件解析不支持该文件类型: {file_type!r} (tool_type {tool_type})"
        )
    return None


def create_answer(task: ParserTask) -> dict[str, Any]:
    """The create answer (the SDK's FileParserTaskCreateResp fields)."""
    return {"task_id": task.id, "message": "任务创建成功", "success": True}


def result_answer(task: ParserTask) -> dict[str, Any]:
    """One result answer; each call while ``processing`` spends one poll."""
    if task.polls_left > 0:
        task.polls_left -= 1
        return {"status": "processing", "message": "任务处理中", "task_id": task.id}
    if task.fails:
        return {"status": "failed", "message": "文件解析失败", "task_id": task.id}
    return {
        "status": "succeeded",
        "message": "结果获取成功",
        "task_id": task.id,
        "content": task.text,
    }


class ParserRoutes:
    """The two handlers, in ``EmulatorApp._api``'s action shape; tasks live in memory.

    ``polls`` is how many result requests each new task answers ``processing``.
    """

    def __init__(self, polls: Callable[[], int], error: Callable[[ApiError], web.Response]) -> None:
        self.tasks: dict[str, ParserTask] = {}
        self._polls = polls
        self._error = error

    async def create(self, request: web.Request, _: str, decision: Decision) -> web.StreamResponse:
        """``POST /files/parser/create``."""
        fields = await _read_fields(request)
        if isinstance(fields, ApiError):
            return self._error(fields)
        filename, data, size, tool_type, file_type = fields
        refused = judge_parse(tool_type, file_type)
        if refused is not None:
            return self._error(refused)
        task = ParserTask(
            id=uuid.uuid4().hex,
            text=text_of(filename, size, data),
            polls_left=self._polls(),
            fails=decision.fault is not None and decision.fault.kind == "parsefail",
        )
        self.tasks[task.id] = task
        return web.json_response(create_answer(task))

    async def result(self, request: web.Request, _: str, __: Decision) -> web.StreamResponse:
        """``GET /files/parser/result/{task_id}/{format_type}`` (``text`` only)."""
        task_id = request.match_info["task_id"]
        task = self.tasks.get(task_id)
        if task is None:
            return self._error(ApiError(404, "1214", f"文件解析任务不存在: {task_id}"))
        if request.match_info["format_type"] != "text":
            return self._error(bad_request("glm", "文件解析 format_type 只支持 text"))
        return web.json_response(result_answer(task))


async def _read_fields(request: web.Request) -> tuple[str, bytes, int, str, str] | ApiError:
    """(filename, kept bytes, size, tool_type, file_type) of a create request."""
    ctype = request.headers.get("Content-Type", "")
    if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
        await drain(request)
        return bad_request("glm", "Content-Type must be multipart/form-data with a boundary")
    reader = Reader(request.headers, cast("StreamReader", QuietContent(request.content)))
    filename: str | None = None
    data = bytearray()
    size = 0
    values = {"tool_type": "", "file_type": ""}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            return bad_request("glm", "Nested multipart bodies are not accepted")
        name = disposition_params(reader.disposition).get("name", "")
        if name in values:
            values[name] = (await part.read()).decode(errors="replace")
        elif name == "file":
            filename = disposition_params(reader.disposition).get("filename") or "upload"
            while chunk := await part.read_chunk(CHUNK):
                if size <= _MAX_BYTES:
                    data += chunk
                size += len(chunk)
        else:
            await part.release()
    if filename is None:
        return bad_request("glm", "Missing multipart field 'file'")
    if size > _MAX_BYTES:
        return ApiError(435, "1214", f"File size exceeds {_MAX_BYTES // MIB}MB")
    if not values["tool_type"] or not values["file_type"]:
        return bad_request("glm", "Missing multipart field 'tool_type' or 'file_type'")
    return filename, bytes(data), size, values["tool_type"], values["file_type"]
