"""Text analysis shared by retrieval and grounding: a stemmer-free normaliser with a synonym and
brand map, sentence spans, and the numbers (dose, frequency, duration, kidney threshold) a
sentence states about a drug.

The normaliser lower-cases and splits like the rules engine (`utimesh.rules.matching.tokens`),
folds spelling variants and plurals, then rewrites phrases to canonical terms:

* brand and synonym names of the four agents, taken from the shared dictionaries
  (`macrobid` -> `nitrofurantoin`, `septra` / `bactrim` / `tmp smx` ->
  `trimethoprim sulfamethoxazole`, `monurol` -> `fosfomycin`);
* members of the interacting drug classes of the shared dictionaries keep their own name and
  gain the class term (`lisinopril` -> `lisinopril rasinhibitor`);
* a small hand-written clinical map (`bladder infection` -> `cystitis`, `crcl` / `egfr` /
  `kidney function` -> `renalfunction`, `pregnant` -> `pregnancy`, `twice daily` -> `bid`, ...).

Everything here is pure and deterministic; indexes are built once, at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from utimesh.rules.matching import tokens

# --- the normaliser ------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words: dropped from retrieval terms. Negations go too: retrieval ranks passages by
# topic; whether a passage says "do" or "do not" is for the reader of the quoted span.
STOPWORDS = _words(
    """
    a an the of and or to in on for with without by at as is are was were be been being it its
    this that these those if than then from into per which who whom what when where how do does
    did has have had can could should would may might must will shall not no nor but also only
    any all each both such there their they them she he her his we you your our i me my e g eg
    ie etc vs via about after before during up down more most less other same so very own while
    until because whether either neither one's let s t over under above below okay ok
    """
)

# Words that say little about what a claim rests on: ignored when judging overlap in grounding.
GENERIC = _words(
    """
    patient person people woman women adult adults take taken taking use used using consider
    recommend recommended give given need needed needs should make made see seek usual usually
    first line option options treat treated treating treatment therapy course agent agents
    drug drugs medication medications regimen regimens prescribe prescribed prescribing
    prescriber pharmacist pharmacists assess assessment evaluate evaluation
    profile profiles rule rules note notes utimesh case cases mean means proposed propose
    """
)

# Units and number words: numbers are compared as facts, never as overlapping words.
UNITS = _words("mg g mcg ml min h hr hour day week month year dose")

_NUMBER_WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "fourteen": "14",
}

# Token-level spelling folds (UK -> US, inflections worth folding without a stemmer).
_TOKEN_MAP = {
    **_NUMBER_WORDS,
    "haematuria": "hematuria",
    "haemolysis": "hemolysis",
    "haemolytic": "hemolytic",
    "hemolytic": "hemolysis",
    "anaemia": "anemia",
    "hyperkalaemia": "hyperkalemia",
    "hyperkalaemic": "hyperkalemia",
    "hyperkalemic": "hyperkalemia",
    "hypoglycaemia": "hypoglycemia",
    "paediatric": "pediatric",
    "oedema": "edema",
    "labour": "labor",
    "counselling": "counseling",
    "counsel": "counseling",
    "kidney": "renal",
    "kidneys": "renal",
    "pregnant": "pregnancy",
    "pregnancies": "pregnancy",
    "gestation": "pregnancy",
    "gestational": "pregnancy",
    "breastfeeding": "lactation",
    "breastfed": "lactation",
    "lactating": "lactation",
    "nursing": "lactation",
    "febrile": "fever",
    "pyrexia": "fever",
    "chills": "rigors",
    "rigor": "rigors",
    "emesis": "vomiting",
    "vomit": "vomiting",
    "allergic": "allergy",
    "allergies": "allergy",
    "hypersensitivity": "allergy",
    "contraindication": "contraindicated",
    "contraindications": "contraindicated",
    "referral": "refer",
    "referred": "refer",
    "referring": "refer",
    "refers": "refer",
    "immunosuppressed": "immunocompromised",
    "immunosuppression": "immunocompromised",
    "catheterised": "catheter",
    "catheterized": "catheter",
    "catheterisation": "catheter",
    "catheterization": "catheter",
    "recurrence": "recurrent",
    "recurring": "recurrent",
    "relapsed": "relapse",
    "diabetic": "diabetes",
    "diabetes": "diabetes",  # not a plural
    "geriatric": "elderly",
    "seniors": "elderly",
    # Lay words (patients' and clinicians' shorthand).
    "utis": "cystitis",
    "uti": "cystitis",
    "pee": "urination",
    "peeing": "urination",
    "urinating": "urination",
    "urinate": "urination",
    "voiding": "urination",
    "micturition": "urination",
    "burning": "dysuria",
    "stinging": "dysuria",
    "nauseous": "nausea",
    "nauseated": "nausea",
    "confused": "confusion",
    "delirious": "delirium",
    "unwell": "malaise systemic",
    "malaise": "malaise systemic",
    "tachycardia": "tachycardia systemic",
    "hypotension": "hypotension systemic",
    "sepsis": "sepsis systemic",
    "septic": "sepsis systemic",
    "dipstick": "urine test",
    "diagnose": "criteria",
    "diagnosing": "criteria",
    "diagnosis": "criteria",
    "criterion": "criteria",
    "intercourse": "dyspareunia",
    "aged": "age",
    "ago": "recent",
    "past": "recent",
    "lately": "recent",
    "recently": "recent",
    "procedure": "instrumentation",
    "procedures": "instrumentation",
    "finish": "end",
    "finishing": "end",
    "finished": "end",
    "completing": "end",
    "third": "recurrent",
    "fourth": "recurrent",
    "again": "recurrent",
    "improved": "improve",
    "improvement": "improve",
    "improving": "improve",
    "improves": "improve",
    "better": "improve",
    "response": "improve",
    "respond": "improve",
    "responding": "improve",
    "responds": "improve",
    "tell": "notify",
    "inform": "notify",
    "informs": "notify",
    "notifies": "notify",
    "notified": "notify",
    "notifying": "notify",
    "reassessment": "reassess",
    "reassessed": "reassess",
    "reassesses": "reassess",
    "followup": "followup reassess",
    "dose": "dose mg",
    "worse": "worsen",
    "worsening": "worsen",
    "worsened": "worsen",
    "worsens": "worsen",
    "unsure": "unknown",
    "uncertain": "unknown",
    "doctor": "physician",
    "doctors": "physician",
    "gp": "physician",
    "dyspnoea": "dyspnea pulmonary",
    "dyspnea": "dyspnea pulmonary",
    "breathless": "dyspnea pulmonary",
    "deficient": "deficiency",
    "cystoscopy": "instrumentation",
    "urodynamic": "instrumentation",
    "urodynamics": "instrumentation",
    "creatinine": "renalfunction",
    "transgender": "gender anatomy",
    "nonbinary": "gender anatomy",
    "teen": "adolescent",
    "teenager": "adolescent",
    "girl": "adolescent",
    "dosing": "dose mg",
    "dosage": "dose mg",
    "duration": "duration day",
    "excluded": "exclude",
    "avoided": "avoid",
    "avoiding": "avoid",
    "avoids": "avoid",
    "exclusion": "exclude",
    "exclusions": "exclude",
    "sulfa": "sulfonamide",
    "sulpha": "sulfonamide",
    "sulfas": "sulfonamide",
    "sulphonamide": "sulfonamide",
    "sulfonamides": "sulfonamide",
    "crcl": "renalfunction",
    "clcr": "renalfunction",
    "egfr": "renalfunction",
    "gfr": "renalfunction",
    "ckd": "renalimpairment",
    "tmp": "trimethoprim",
    "smx": "sulfamethoxazole",
    "sxt": "trimethoprim sulfamethoxazole",
    "asb": "asymptomatic bacteriuria",
    "pyelo": "pyelonephritis",
    "cva": "costovertebral",
    "stis": "sti",
    "std": "sti",
    "stds": "sti",
    "mra": "potassiumsparing",
    "mras": "potassiumsparing",
    "arb": "rasinhibitor",
    "arbs": "rasinhibitor",
    "vka": "warfarin",
    "od": "qd",
    "po": "oral",
    "orally": "oral",
    "days": "day",
    "weeks": "week",
    "hours": "hour",
    "hrs": "hour",
    "hr": "hour",
    "h": "hour",
    "months": "month",
    "years": "year",
    "doses": "dose",
}
_PLURAL_KEEP = ("ss", "us", "is", "ys", "os")

# Phrase rewrites (on folded tokens): phrase -> replacement terms.
_PHRASES: dict[str, str] = {
    "bladder infection": "cystitis",
    "urinary tract infection": "cystitis",
    "lower urinary tract infection": "cystitis",
    "urinary infection": "cystitis",
    "throwing up": "vomiting",
    "throw up": "vomiting",
    "being sick": "vomiting",
    "racing heart": "tachycardia",
    "heart racing": "tachycardia",
    "fast heart rate": "tachycardia",
    "fast heartbeat": "tachycardia",
    "low blood pressure": "hypotension",
    "lower back": "flank",
    "side effect": "adverse effect",
    "side": "flank",
    "short of breath": "dyspnea pulmonary",
    "shortness of breath": "dyspnea pulmonary",
    "difficulty breathing": "dyspnea pulmonary",
    "trouble breathing": "dyspnea pulmonary",
    "not sure": "unknown",
    "not known": "unknown",
    "getting worse": "worsen",
    "48 hour": "48h",
    "2 day": "48h",
    "positive urine culture": "bacteriuria",
    "positive urine test": "bacteriuria",
    "urine test positive": "bacteriuria",
    "positive urine": "bacteriuria",
    "positive culture": "bacteriuria",
    "pain during sex": "dyspareunia",
    "pain with sex": "dyspareunia",
    "painful sex": "dyspareunia",
    "year of age": "age",
    "younger than": "age",
    "older than": "age",
    "last week": "recent",
    "last month": "recent",
    "urologic instrumentation": "instrumentation",
    "urological instrumentation": "instrumentation",
    "end of treatment": "end treatment",
    "what to tell": "counseling advise",
    "tell the patient": "counseling advise",
    "patient advice": "counseling advise",
    "family doctor": "primarycare physician",
    "family physician": "primarycare physician",
    "primary care provider": "primarycare",
    "primary care": "primarycare",
    "follow up": "followup reassess",
    "rule out": "exclude",
    "ruled out": "exclude",
    "year old": "age",
    "years old": "age",
    "how long": "day",
    "how many day": "duration day",
    "12 month": "year",
    "second choice": "alternative",
    "second line": "alternative",
    "next choice": "alternative",
    "non binary": "gender anatomy",
    "gender diverse": "gender anatomy",
    "no symptom": "asymptomatic",
    "without symptom": "asymptomatic",
    "no urinary symptom": "asymptomatic",
    "no urinary complaint": "asymptomatic",
    "serum creatinine": "renalfunction",
    "renal infection": "pyelonephritis",
    "upper uti": "pyelonephritis",
    "renal function": "renalfunction",
    "creatinine clearance": "renalfunction",
    "ml min": "renalfunction",
    "renal impairment": "renalimpairment",
    "renal dysfunction": "renalimpairment",
    "renal disease": "renalimpairment",
    "renal insufficiency": "renalimpairment",
    "renal failure": "renalimpairment",
    "chronic renal disease": "renalimpairment",
    "breast feeding": "lactation",
    "older adult": "elderly",
    "older people": "elderly",
    "older patient": "elderly",
    "older woman": "elderly",
    "blood in urine": "hematuria",
    "bloody urine": "hematuria",
    "painful urination": "dysuria",
    "pain on urination": "dysuria",
    "burning on urination": "dysuria",
    "burning urination": "dysuria",
    "burning when urinating": "dysuria",
    "frequent urination": "frequency",
    "urinary frequency": "frequency",
    "urinary urgency": "urgency",
    "sexually transmitted infection": "sti",
    "sexually transmitted": "sti",
    "glucose 6 phosphate dehydrogenase": "g6pd",
    "high potassium": "hyperkalemia",
    "ace inhibitor": "rasinhibitor",
    "angiotensin converting enzyme inhibitor": "rasinhibitor",
    "angiotensin receptor blocker": "rasinhibitor",
    "ras inhibitor": "rasinhibitor",
    "renin angiotensin": "rasinhibitor",
    "potassium sparing": "potassiumsparing",
    "mineralocorticoid receptor antagonist": "potassiumsparing",
    "potassium supplement": "potassiumsupplement",
    "vitamin k antagonist": "warfarin",
    "blood thinner": "warfarin",
    "twice daily": "bid",
    "twice a day": "bid",
    "2 times daily": "bid",
    "2 times a day": "bid",
    "every 12 hour": "bid",
    "q12h": "bid",
    "b i d": "bid",
    "once daily": "qd",
    "once a day": "qd",
    "every 24 hour": "qd",
    "3 times daily": "tid",
    "3 times a day": "tid",
    "4 times daily": "qid",
    "4 times a day": "qid",
    "single dose": "singledose",
    "1 dose": "singledose",
    "one time dose": "singledose",
    "stat dose": "singledose",
    "costovertebral angle": "costovertebral",
    "back pain": "flank",
    "flank pain": "flank",
    "loin pain": "flank",
    "by mouth": "oral",
}

# Canonical agent names for the dictionary groups that name one agent (brand -> generic).
_AGENT_GROUPS = {
    "allergy_nitrofurantoin": "nitrofurantoin",
    "allergy_fosfomycin": "fosfomycin",
    "allergy_tmp_smx_product": "trimethoprim sulfamethoxazole",
    "allergy_trimethoprim": "trimethoprim",
}
# Drug classes of the dictionaries: a member keeps its name and gains the class term.
_CLASS_GROUPS = {
    "ras_inhibitors": "rasinhibitor",
    "potassium_sparing": "potassiumsparing",
    "potassium_supplements": "potassiumsupplement",
    "warfarin": "warfarin",
    "methotrexate": "methotrexate",
    "phenytoin": "phenytoin",
    "sulfonylureas": "sulfonylurea",
    "dofetilide": "dofetilide",
    "digoxin": "digoxin",
    "metoclopramide": "metoclopramide",
    "uricosurics": "uricosuric",
    "immunosuppressants": "immunosuppressant",
    "nonantibiotic_sulfonamides": "sulfonamide",
}

# How canonical terms read in a sentence for people.
DISPLAY = {
    "renalfunction": "kidney function",
    "renalimpairment": "kidney impairment",
    "renal": "kidney",
    "rasinhibitor": "RAS inhibitors",
    "potassiumsparing": "potassium-sparing diuretics",
    "potassiumsupplement": "potassium supplements",
    "bid": "twice daily",
    "qd": "once daily",
    "tid": "three times daily",
    "qid": "four times daily",
    "singledose": "a single dose",
    "primarycare": "primary care",
    "sti": "sexually transmitted infection",
    "g6pd": "G6PD deficiency",
    "elderly": "older adults",
    "lactation": "breastfeeding",
    "flank": "flank pain",
}


def _fold(token: str) -> str:
    mapped = _TOKEN_MAP.get(token)
    if mapped is not None:
        return mapped
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(_PLURAL_KEEP):
        return token[:-1]
    return token


def _folded(text: str) -> list[str]:
    out: list[str] = []
    for token in tokens(text):
        out.extend(_fold(token).split())
    return out


# Rule ids ("RX-SEL-NIT", "PREG-001..004") and parameter names are labels, not words.
_RULE_ID = re.compile(r"\b(?:DATA|RF|FU|SX|CX|PREG|REC|RX|DDI|W)-[A-Z0-9-]*[A-Z0-9](?:\.\.\d+)?\b")


def strip_rule_ids(text: str) -> str:
    """`text` without rule ids, which would otherwise read as words and numbers."""
    return _RULE_ID.sub(" ", text)


@dataclass(frozen=True, slots=True)
class _Rewrite:
    phrase: tuple[str, ...]
    replacement: tuple[str, ...]
    keep: bool  # keep the phrase's own tokens (class members) or replace them (synonyms)


class Normaliser:
    """Text -> canonical terms for BM25 and for overlap judgements."""

    def __init__(self, dictionary_groups: Mapping[str, Iterable[str]]) -> None:
        rewrites: list[_Rewrite] = []
        for text, replacement in _PHRASES.items():
            rewrites.append(_Rewrite(tuple(_folded(text)), tuple(replacement.split()), False))
        for group, canonical in _AGENT_GROUPS.items():
            for term in dictionary_groups.get(group, ()):
                phrase = tuple(_folded(term))
                if phrase != tuple(canonical.split()):
                    rewrites.append(_Rewrite(phrase, tuple(canonical.split()), False))
        # Spelled-out forms the dictionaries do not hold, e.g. "nitrofurans".
        rewrites.append(_Rewrite(("nitrofuran",), ("nitrofurantoin",), False))
        for group, concept in _CLASS_GROUPS.items():
            for term in dictionary_groups.get(group, ()):
                phrase = tuple(_folded(term))
                if phrase != (concept,):
                    rewrites.append(_Rewrite(phrase, (concept,), True))
        index: dict[str, list[_Rewrite]] = {}
        for rw in rewrites:
            if rw.phrase:
                index.setdefault(rw.phrase[0], []).append(rw)
        for options in index.values():
            # Longest phrase first; among equals the first declared wins (stable sort).
            options.sort(key=lambda rw: -len(rw.phrase))
        self._index = index

    def canonical(self, text: str) -> list[str]:
        """Every canonical token of `text`, stopwords included, in order."""
        folded = _folded(strip_rule_ids(text))
        out: list[str] = []
        i = 0
        while i < len(folded):
            for rw in self._index.get(folded[i], ()):
                n = len(rw.phrase)
                if tuple(folded[i : i + n]) == rw.phrase:
                    if rw.keep:
                        out.extend(rw.phrase)
                    out.extend(rw.replacement)
                    i += n
                    break
            else:
                out.append(folded[i])
                i += 1
        return out

    def terms(self, text: str) -> list[str]:
        """Retrieval terms: canonical tokens without stopwords and generic words, in order
        (repeats kept)."""
        return [
            t
            for t in self.canonical(text)
            if t not in STOPWORDS and t not in GENERIC and len(t) > 1
        ]

    def content_terms(self, text: str) -> list[str]:
        """What a text is about: retrieval terms without numbers, units and generic words,
        first occurrences only, in order."""
        return content_of(self.terms(text))


def content_of(terms: Iterable[str]) -> list[str]:
    """The content terms among retrieval terms (see `Normaliser.content_terms`)."""
    return [
        t for t in dict.fromkeys(terms) if not t.isdigit() and t not in UNITS and t not in GENERIC
    ]


# Names of jurisdiction codes: a passage is indexed with its jurisdiction's name, so that
# "Ontario" finds a passage that only says "CA-ON" or "OCP".
JURISDICTION_NAMES = {
    "CA": "Canada Canadian",
    "CA-ON": "Ontario Canada",
    "CA-AB": "Alberta Canada",
    "CA-SK": "Saskatchewan Canada",
    "CA-MB": "Manitoba Canada",
    "CA-NS": "Nova Scotia Canada",
    "CA-QC": "Quebec Canada",
    "CA-BC": "British Columbia Canada",
    "US": "United States American",
    "UK": "United Kingdom British",
    "FR": "France French",
    "International": "international",
}


def display(term: str) -> str:
    """A canonical term as people write it."""
    return DISPLAY.get(term, term)


# --- sentences -----------------------------------------------------------------------------------

# A sentence ends at . ! ? or ; followed by white space and a capital, digit or opening bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=[A-Z0-9(\"'])")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of `text`; text[start:end] is verbatim and trimmed."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    trimmed: list[tuple[int, int]] = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            trimmed.append((s, e))
    return trimmed


# --- facts: the numbers a sentence states about a drug ---------------------------------------------

AGENT_NAMES = {
    "NIT": "nitrofurantoin",
    "SXT": "trimethoprim-sulfamethoxazole",
    "TMP": "trimethoprim",
    "FOS": "fosfomycin",
}
# Order matters: the combination is tried before its components at the same position.
_DRUG = re.compile(
    r"(?P<SXT>trimethoprim[\s/-]*(?:\+\s*)?sulfamethoxazole|sulfamethoxazole[\s/-]*(?:\+\s*)?trimethoprim"
    r"|\btmp[\s/-]*smx\b|\bsmx[\s/-]*tmp\b|co-?trimoxazole|\bseptra\b|\bbactrim\b|\bsxt\b)"
    r"|(?P<TMP>\btrimethoprim\b|\btmp\b)"
    r"|(?P<SMX>\bsulfamethoxazole\b|\bsmx\b)"
    r"|(?P<NIT>nitrofurantoin|\bmacrobid\b|\bmacrodantin\b|\bnitrofurans?\b)"
    r"|(?P<FOS>fosfomycin|\bmonurol\b)"
)
_NUM = r"(\d+(?:\.\d+)?)"
_DOSE = re.compile(rf"{_NUM}(?:\s*/\s*{_NUM})?\s*(mg|g|mcg|micrograms?|grams?|milligrams?)\b")
_DURATION = re.compile(
    rf"\bfor\s+(?:a\s+|an\s+)?(?:total\s+of\s+)?{_NUM}(?:\s*(?:-|\u2013|to|or)\s*{_NUM})?\s*(days?|weeks?)\b"
    rf"|\b{_NUM}(?:\s*(?:-|\u2013|to)\s*{_NUM})?[\s-]*(days?|weeks?)[\s-]+(?:course|regimen|treatment|therapy)"
)
_FREQUENCY = (
    (
        "bid",
        re.compile(
            r"\bbid\b|\bb\.i\.d\b|twice\s+(?:a\s+)?dai?ly|twice\s+a\s+day|2\s+times\s+(?:a\s+)?dai?ly"
            r"|2\s+times\s+a\s+day|every\s+12\s+h|\bq12h\b|12[-\s]hourly"
        ),
    ),
    ("tid", re.compile(r"\btid\b|3\s+times\s+(?:a\s+)?dai?ly|3\s+times\s+a\s+day|every\s+8\s+h")),
    ("qid", re.compile(r"\bqid\b|4\s+times\s+(?:a\s+)?dai?ly|4\s+times\s+a\s+day|every\s+6\s+h")),
    ("qd", re.compile(r"once\s+(?:a\s+)?daily|once\s+a\s+day|\bqd\b|\bod\b|every\s+24\s+h")),
    (
        "single",
        re.compile(
            r"single[\s-]+(?:oral\s+)?dose|\b1\s+dose\b|one[\s-]time\s+dose|\bsingle\s+\d+(?:\.\d+)?\s*g\b"
            r"|\bstat\b|once\s+only|as\s+a\s+single"
        ),
    ),
)
_RENAL_CONTEXT = re.compile(
    r"egfr|\bgfr\b|crcl|clcr|creatinine\s+clearance|kidney\s+function|renal\s+function"
    r"|ml\s*/\s*min|egfr_ml_min"
)
# A kidney-function number or range, not followed by another unit ("40-59 mL/min", "< 30").
_RENAL_NUMBER = re.compile(
    rf"(?<![\w.]){_NUM}(?:\s*(?:-|\u2013|to)\s*{_NUM})?(?![\w.%°])"
    r"(?!\s*(?:mg|g|mcg|days?|weeks?|h|hours?|years?|months?|%)\b)"
)
_ACTIONS = (
    (
        "avoid",
        re.compile(r"\bavoid|contraindicat|\bexclude|do\s+not\s+use|should\s+not\s+be\s+used"),
    ),
    ("caution", re.compile(r"caution|\bwarn|monitor|reduce\s+the\s+dose|dose\s+adjust")),
    ("refer", re.compile(r"\brefer")),
)
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b")


@dataclass(frozen=True, slots=True)
class Fact:
    """A number a sentence states: `kind` of `drug` (an agent code, or "" for none), with the
    `action` for kidney thresholds. Values are ranges (low, high) in mg, days or mL/min."""

    kind: str  # "dose" | "frequency" | "duration" | "renal"
    drug: str
    action: str
    values: tuple[tuple[float, float], ...] = ()
    codes: tuple[str, ...] = ()  # frequency codes
    text: str = ""  # the words stated, for rationales

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.drug, self.action)


def _mg(amount: float, unit: str) -> float:
    if unit.startswith("g"):
        return amount * 1000
    if unit.startswith(("mc", "micro")):
        return amount / 1000
    return amount


def _fmt(x: float) -> str:
    return f"{x:g}"


def _nearest_drug(mentions: Sequence[tuple[int, str]], pos: int) -> str:
    """The drug mentioned last before `pos`, else the first after it, else ""."""
    before = [d for p, d in mentions if p <= pos]
    if before:
        return before[-1]
    after = [d for p, d in mentions if p > pos]
    return after[0] if after else ""


def sentence_facts(sentence: str) -> tuple[Fact, ...]:
    """The regimen numbers (dose, frequency, duration per drug) and kidney thresholds of one
    sentence. Conservative: a number whose drug or meaning is unclear is left out."""
    low = _WORD_NUMBER.sub(lambda m: _NUMBER_WORDS[m.group(1)], strip_rule_ids(sentence).lower())
    mentions: list[tuple[int, str]] = []
    for m in _DRUG.finditer(low):
        kind = m.lastgroup or ""
        mentions.append((m.start(), "SXT" if kind == "SMX" else kind))
    if any(d == "SXT" for _, d in mentions):
        # "TMP-SMX (trimethoprim 160 mg + sulfamethoxazole 800 mg)": the parts are the combination.
        mentions = [(p, "SXT" if d == "TMP" else d) for p, d in mentions]
    facts: list[Fact] = []
    if mentions:
        for m in _DOSE.finditer(low):
            drug = _nearest_drug(mentions, m.start())
            unit = m.group(3)
            amounts = [float(g) for g in (m.group(1), m.group(2)) if g is not None]
            if unit.startswith(("g", "gram")) and m.group(2) is not None:
                continue  # "160/800 g" is not a dose anyone writes
            values = tuple((_mg(a, unit), _mg(a, unit)) for a in amounts)
            facts.append(Fact("dose", drug, "", values, text=m.group(0)))
        for m in _DURATION.finditer(low):
            drug = _nearest_drug(mentions, m.start())
            a, b, unit = (m.group(1), m.group(2), m.group(3)) if m.group(1) else m.group(4, 5, 6)
            scale = 7.0 if unit.startswith("week") else 1.0
            lo = float(a) * scale
            hi = float(b) * scale if b is not None else lo
            facts.append(Fact("duration", drug, "", ((min(lo, hi), max(lo, hi)),), text=m.group(0)))
        for code, pattern in _FREQUENCY:
            for m in pattern.finditer(low):
                drug = _nearest_drug(mentions, m.start())
                facts.append(Fact("frequency", drug, "", codes=(code,), text=m.group(0)))
    if _RENAL_CONTEXT.search(low):
        action = next((name for name, pattern in _ACTIONS if pattern.search(low)), "")
        drug = mentions[0][1] if mentions and len({d for _, d in mentions}) == 1 else ""
        values = tuple(
            (float(m.group(1)), float(m.group(2) or m.group(1)))
            for m in _RENAL_NUMBER.finditer(low)
            if 5 <= float(m.group(1)) <= 150
        )
        if values and action:
            facts.append(Fact("renal", drug, action, values, text="kidney function threshold"))
    return tuple(facts)


def merge_facts(facts: Iterable[Fact]) -> dict[tuple[str, str, str], Fact]:
    """Facts of several sentences, one per (kind, drug, action), values united."""
    merged: dict[tuple[str, str, str], Fact] = {}
    for f in facts:
        have = merged.get(f.key)
        if have is None:
            merged[f.key] = f
        else:
            merged[f.key] = Fact(
                f.kind,
                f.drug,
                f.action,
                tuple(dict.fromkeys(have.values + f.values)),
                tuple(dict.fromkeys(have.codes + f.codes)),
                have.text,
            )
    return merged


def facts_agree(a: Fact, b: Fact) -> bool:
    """Two facts of the same key share a value (ranges overlap) or a frequency code."""
    if a.kind == "frequency":
        return bool(set(a.codes) & set(b.codes))
    return any(
        lo1 <= hi2 + 1e-9 and lo2 <= hi1 + 1e-9 for lo1, hi1 in a.values for lo2, hi2 in b.values
    )


def describe(fact: Fact) -> str:
    """The values of a fact as people write them, e.g. "100 mg", "5 days", "twice daily"."""
    if fact.kind == "frequency":
        return " or ".join(display(c if c != "single" else "singledose") for c in fact.codes)
    unit = {"dose": "mg", "duration": "days", "renal": "mL/min"}[fact.kind]
    parts = []
    for lo, hi in fact.values:
        if fact.kind == "dose" and lo >= 1000 and lo == hi:
            parts.append(f"{_fmt(lo / 1000)} g")
            continue
        value = _fmt(lo) if lo == hi else f"{_fmt(lo)}-{_fmt(hi)}"
        parts.append(f"{value} {unit}")
    return " or ".join(parts)
