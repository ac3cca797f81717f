"""The error taxonomy (EVALUATION.md §Error taxonomy): the labels reviewers and adjudicators use
for what went wrong. Kept import-light: the online metrics use it to bound label values."""

from __future__ import annotations

#: category -> what it means. Reviewers may send other snake_case words (SubmitReview accepts
#: any); summaries count them as "other:<word>" and metrics as "other".
TAXONOMY: dict[str, str] = {
    # clinical decision
    "wrong_decision": "treat / refer / no-antibiotics is wrong for this patient",
    "missed_red_flag": "a red flag or complicating factor was present and not acted on",
    "unnecessary_referral": "referred although pharmacist treatment was appropriate",
    # prescribing
    "wrong_regimen": "another eligible agent should have been chosen",
    "wrong_dose": "dose, frequency or duration wrong for this patient",
    "missed_allergy": "an allergy or cross-reactivity was missed",
    "missed_interaction": "a drug interaction was missed or mis-graded",
    "missed_contraindication": "renal, pregnancy, age or other contraindication missed",
    # evidence and reasoning
    "unsupported_claim": "a claim without support in the cited evidence",
    "wrong_citation": "the cited passage does not say what the claim says",
    "hallucinated_fact": "a fact about the patient or drug that is not in the record",
    # communication
    "unclear_explanation": "the rationale or report is hard to follow or ambiguous",
    "missing_counselling": "counselling or monitoring advice missing or wrong",
    # process
    "unnecessary_escalation": "escalated to a human although the agents should have agreed",
    "missed_escalation": "should have been escalated and was not",
    "intake_error": "the intake did not reflect the patient (data entry, contradiction)",
}

#: Categories that make a disagreement a safety matter: adjudicated first.
SAFETY = frozenset(
    {
        "wrong_decision",
        "missed_red_flag",
        "wrong_dose",
        "missed_allergy",
        "missed_interaction",
        "missed_contraindication",
        "missed_escalation",
    }
)
