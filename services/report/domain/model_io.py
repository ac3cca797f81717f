"""The model's side of AnswerQuestion: its structured output, the message it is given, and the
check that turns its output into an `Answer` only when every id it cites exists."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.report.domain.answer import (
    Answer,
    AnswerKind,
    PassageCitation,
    known_rule_ids,
)
from services.report.domain.render import Rendered, render
from utimesh.consult.v1 import consult_pb2 as cpb

MAX_ANSWER_CHARS = 2_000


class ReportModelOutput(BaseModel):
    """What the model must return (strict JSON schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ANSWERED", "CANNOT_ANSWER", "NEEDS_NEW_CONSULTATION", "OUT_OF_SCOPE"]
    answer: str = Field(min_length=1, max_length=MAX_ANSWER_CHARS)
    section_ids: list[str] = Field(max_length=8)
    passage_ids: list[str] = Field(max_length=8)
    rule_ids: list[str] = Field(max_length=16)


class UnknownCitation(ValueError):
    """The model cited an id the consultation or the report does not contain."""


def user_message(consultation: cpb.Consultation, question: str) -> str:
    """The report (without the consultation's name and time: no record identifiers), its
    sections, its passages and the question, as JSON the model reads as data."""
    anonymous = cpb.Consultation()
    anonymous.CopyFrom(consultation)
    for name in ("name", "request_id", "create_time", "report_markdown", "report_sha256"):
        anonymous.ClearField(name)
    rendered = render(anonymous, anonymous.corpus_version)
    passages = [
        {
            "passage_id": c.passage.id,
            "source_key": c.passage.source_key,
            "title": c.passage.title,
            "text": c.passage.text,
            "quoted_span": c.quoted_span,
            "claim_id": g.claim.id,
        }
        for g in consultation.groundings
        for c in g.citations
    ]
    return json.dumps(
        {
            "question": question,
            "sections": [{"id": s.id, "title": s.title} for s in rendered.sections],
            "passages": passages,
            "report_markdown": rendered.markdown,
        },
        ensure_ascii=False,
    )


def to_answer(
    output: ReportModelOutput, consultation: cpb.Consultation, rendered: Rendered, model: str
) -> Answer:
    """The model's answer, with passage spans taken from the consultation (never from the
    model). Raises UnknownCitation when any cited id is not in the consultation or report."""
    citations = {
        c.passage.id: PassageCitation(
            c.passage.id, c.passage.source_key, c.passage.title, c.quoted_span
        )
        for g in consultation.groundings
        for c in g.citations
    }
    unknown = [p for p in output.passage_ids if p not in citations]
    unknown += [s for s in output.section_ids if s not in rendered.section_ids()]
    unknown += [r for r in output.rule_ids if r not in known_rule_ids(consultation)]
    if unknown:
        raise UnknownCitation(f"{len(unknown)} cited id(s) not in the consultation")
    kind = AnswerKind(output.kind)
    if kind is AnswerKind.ANSWERED and not output.section_ids:
        raise UnknownCitation("an answer must cite at least one report section")
    return Answer(
        kind=kind,
        text=output.answer,
        section_ids=tuple(dict.fromkeys(output.section_ids)),
        passages=tuple(citations[p] for p in dict.fromkeys(output.passage_ids)),
        rule_ids=tuple(dict.fromkeys(output.rule_ids)),
        generated_by=model,
    )
