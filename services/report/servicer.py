"""Thin ReportService servicer: input checks, the renderer, the offline answerer and (when a
model is configured) the model answerer, proto <-> domain mapping. Questions are never logged."""

from __future__ import annotations

import logging

import grpc

from services.report.domain.answer import Answer, AnswerKind, Vocabulary, answer
from services.report.domain.model_io import (
    ReportModelOutput,
    UnknownCitation,
    to_answer,
    user_message,
)
from services.report.domain.render import Rendered, render
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.kit.errors import FieldViolation, InvalidArgument
from utimesh.llm import ConfigError, LLMError, ModelProfile, Prompt, StructuredLLM
from utimesh.report.v1 import report_pb2 as rpb
from utimesh.report.v1 import report_pb2_grpc
from utimesh.rules import Knowledge

SERVICE_NAME = "utimesh.report.v1.ReportService"
DOMAIN = "report.utimesh.dev"
OFFLINE_PROVIDER = "offline"
MAX_QUESTION_CHARS = 1_000
# Kept back from the call's budget so that, when the model runs out of time, the offline answer
# still goes back to the caller instead of DEADLINE_EXCEEDED.
RESERVE_S = 0.1
# Only these offline kinds go to the model: refusals stay refusals whatever a model would say.
_MODEL_MAY_ANSWER = frozenset({AnswerKind.ANSWERED, AnswerKind.CANNOT_ANSWER})

_KINDS = {
    AnswerKind.ANSWERED: rpb.ANSWER_KIND_ANSWERED,
    AnswerKind.CANNOT_ANSWER: rpb.ANSWER_KIND_CANNOT_ANSWER,
    AnswerKind.NEEDS_NEW_CONSULTATION: rpb.ANSWER_KIND_NEEDS_NEW_CONSULTATION,
    AnswerKind.OUT_OF_SCOPE: rpb.ANSWER_KIND_OUT_OF_SCOPE,
}

log = logging.getLogger("utimesh.report")


def uses_model(profile: ModelProfile) -> bool:
    return profile.provider != OFFLINE_PROVIDER


class ReportServicer(report_pb2_grpc.ReportServiceServicer):
    """`llm` and `prompt` are required when the profile's provider is not offline (ConfigError
    at start otherwise); with an offline profile no model is ever called."""

    def __init__(
        self,
        knowledge: Knowledge,
        *,
        llm: StructuredLLM | None = None,
        profile: ModelProfile | None = None,
        prompt: Prompt | None = None,
    ) -> None:
        profile = profile or ModelProfile()
        if uses_model(profile) and (llm is None or prompt is None):
            raise ConfigError(
                f"provider {profile.provider!r} needs an LLM client and a prompt",
                metadata={"provider": profile.provider},
            )
        self.vocabulary = Vocabulary.from_knowledge(knowledge)
        self._llm = llm if uses_model(profile) else None
        self._profile = profile
        self._prompt = prompt
        self._system = prompt.render() if prompt is not None else ""

    async def RenderReport(
        self, request: rpb.RenderReportRequest, context: grpc.aio.ServicerContext
    ) -> rpb.RenderReportResponse:
        """The deterministic markdown report of the consultation, its SHA-256 and sections."""
        _check_consultation(request)
        rendered = render(request.consultation, request.corpus_version)
        return rpb.RenderReportResponse(
            markdown=rendered.markdown,
            sha256=rendered.sha256,
            sections=[rpb.ReportSection(id=s.id, title=s.title) for s in rendered.sections],
        )

    async def AnswerQuestion(
        self, request: rpb.AnswerQuestionRequest, context: grpc.aio.ServicerContext
    ) -> rpb.AnswerQuestionResponse:
        """An answer from the report and its evidence; refusals say why. Never logs the
        question."""
        _check_question(request)
        consultation = request.consultation
        rendered = render(consultation, consultation.corpus_version)
        result = answer(consultation, rendered, request.question, vocabulary=self.vocabulary)
        if self._llm is not None and result.kind in _MODEL_MAY_ANSWER:
            result = await self._with_model(
                self._llm, request, rendered, result, context.time_remaining()
            )
        return _answer_to_proto(result, rendered)

    async def _with_model(
        self,
        llm: StructuredLLM,
        request: rpb.AnswerQuestionRequest,
        rendered: Rendered,
        offline: Answer,
        time_remaining: float | None,
    ) -> Answer:
        deadline = None if time_remaining is None else max(0.0, time_remaining - RESERVE_S)
        prompt_id = self._prompt.id if self._prompt is not None else ""
        try:
            generation = await llm.generate(
                system=self._system,
                user=user_message(request.consultation, request.question),
                output_type=ReportModelOutput,
                profile=self._profile,
                deadline_s=deadline,
                prompt_version=prompt_id,
            )
            return to_answer(generation.output, request.consultation, rendered, generation.model)
        except LLMError as err:
            log.warning("model answer missing", extra={"fields": {"reason": err.reason}})
        except UnknownCitation:
            # Never pass on a citation the consultation lacks: the offline answer stands.
            log.warning("model answer discarded", extra={"fields": {"reason": "UNKNOWN_CITATION"}})
        return offline


def _check_consultation(request: rpb.RenderReportRequest | rpb.AnswerQuestionRequest) -> None:
    violations = _consultation_violations(request)
    if violations:
        raise InvalidArgument(
            "a finished consultation is required",
            reason="MISSING_CONSULTATION",
            violations=violations,
        )


def _consultation_violations(
    request: rpb.RenderReportRequest | rpb.AnswerQuestionRequest,
) -> list[FieldViolation]:
    if not request.HasField("consultation"):
        return [FieldViolation("consultation", "is required", "REQUIRED")]
    if request.consultation.decision == pb.DECISION_UNSPECIFIED:
        return [FieldViolation("consultation.decision", "must be set", "REQUIRED")]
    return []


def _check_question(request: rpb.AnswerQuestionRequest) -> None:
    violations = _consultation_violations(request)
    if not request.question.strip():
        violations.append(FieldViolation("question", "must not be empty", "REQUIRED"))
    elif len(request.question) > MAX_QUESTION_CHARS:
        violations.append(
            FieldViolation(
                "question", f"must be at most {MAX_QUESTION_CHARS} characters", "TOO_LONG"
            )
        )
    if violations:
        missing = violations[0].field.startswith("consultation")
        raise InvalidArgument(
            f"the request has {len(violations)} invalid field(s)",
            reason="MISSING_CONSULTATION" if missing else "INVALID_QUESTION",
            violations=violations,
        )


def _answer_to_proto(a: Answer, rendered: Rendered) -> rpb.AnswerQuestionResponse:
    sections = [s for i in a.section_ids if (s := rendered.section(i)) is not None]
    return rpb.AnswerQuestionResponse(
        kind=_KINDS[a.kind],
        answer=a.text,
        sections=[rpb.ReportSection(id=s.id, title=s.title) for s in sections],
        passages=[
            rpb.PassageRef(
                passage_id=p.passage_id,
                source_key=p.source_key,
                title=p.title,
                quoted_span=p.quoted_span,
            )
            for p in a.passages
        ],
        rule_ids=list(a.rule_ids),
        generated_by=a.generated_by,
    )
