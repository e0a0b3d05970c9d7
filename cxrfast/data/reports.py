"""Radiology report text: sections, cleaning, sentences and words.

    parsed = parse_report(text)          # ParsedReport: .sections {"findings": ..., "impression": ...}, .fallback
    section_report(text)                 # the sections only
    clean_report(text)                   # whitespace normalised, IU X-ray's XXXX tokens removed
    split_sentences(text)                # ["The lungs are clear.", "No effusion."]
    split_words("No effusion.")          # ["no", "effusion", "."]

Sectioning follows the conventions of MIMIC-CXR's own section parser (MIT-LCP/mimic-cxr,
txt/section_parser.py), reimplemented here:
  - A header is a label and a colon at the start of a line ("FINDINGS:", " Impression:"), or an
    upper-case known label after a sentence's end on the same line ("... None. FINDINGS: ...", the
    flattened reports of CSV exports). Labels are normalised with the field's table (SECTION_NAMES:
    "FINDINGS AND IMPRESSION" → impression, "CLINICAL HISTORY" → history, "REASON FOR EXAM" →
    indication, "CONCLUSION" → impression, the misspellings MIMIC holds, ...). Any-case labels count
    only when the table knows them, so "Heart size: normal." stays text. Upper-case labels the table
    does not know are normalised as MIMIC does: one containing a main section name is that section
    ("FINAL IMPRESSION" → impression), one describing the exam ("CHEST, PA AND LATERAL") is findings;
    other labels ("LUNGS:", "PLEURA:") are sub-headings and stay in the text of their section.
  - A section runs to the next header. Empty findings / impression sections are dropped (a title line
    such as "CHEST, PA AND LAT:" right before the next header). A section name met twice keeps both
    texts, joined by a newline. Text before the first header is "preamble".
  - A WET READ preamble: the text before a line that reads FINAL REPORT (the preliminary read and an
    ADDENDUM sit there) is kept under "wet read" (or "addendum", or "preamble", after the label it
    opens with) and never feeds findings, impression or the fallbacks.
  - Fallbacks, reported in ParsedReport.fallback (None when both FINDINGS and IMPRESSION were found):
      "impression only" / "findings only"   one of the two headers was found;
      "last paragraph"   neither was: the last paragraph becomes the impression. Without any header,
                         the last paragraph of the text (all of it when it is one paragraph; the earlier
                         paragraphs stay as "preamble"); with headers, the last paragraph of the last
                         section when that section has two or more paragraphs (its first paragraph
                         answers its header: "COMPARISON: None.\\n\\nThe lungs are clear.").
      "none"             no FINDINGS, no IMPRESSION and no paragraph to stand for one (an empty report,
                         or headers whose last section is a single paragraph).
Section texts are `clean_report`ed: one space between words, line breaks kept, paragraphs separated by
one blank line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["ParsedReport", "parse_report", "section_report", "header_fallback", "clean_report", "split_sentences",
           "sentence_spans", "split_words", "word_spans", "SECTION_NAMES", "FALLBACKS"]

FALLBACKS = (None, "impression only", "findings only", "last paragraph", "none")

# Header label (lower case, single spaces) → section name. The field's table (MIMIC-CXR's section
# parser), with the plural and slash forms seen in IU X-ray and CheXpert-style exports.
SECTION_NAMES = {
    "findings": "findings", "finding": "findings", "reference findings": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "findings and impression": "impression", "findings/impression": "impression",
    "findings / impression": "impression", "findings/ impression": "impression",
    "impression and findings": "impression",
    "indication": "indication", "indications": "indication", "clinical indication": "indication",
    "reason for exam": "indication", "reason for examination": "indication", "reason for study": "indication",
    "history": "history", "clinical history": "history", "clinical information": "history",
    "patient history": "history", "pfi": "history",
    "comparison": "comparison", "comparisons": "comparison", "comparison exam": "comparison",
    "comparison film": "comparison", "reference exam": "comparison",
    "technique": "technique",
    "examination": "examination", "exam": "examination", "type of examination": "examination",
    "notification": "notification",
    "recommendation": "recommendations", "recommendations": "recommendations",
    "recommendation(s)": "recommendations",
    "addendum": "addendum", "comment": "comment", "comments": "comment",
    "wet read": "wet read", "wetread": "wet read",
    # misspellings that MIMIC-CXR's reports hold
    "impresson": "impression", "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression",
    "findins": "findings", "findindgs": "findings", "findgings": "findings", "findngs": "findings",
    "findnings": "findings", "finidngs": "findings", "idication": "indication", "comparision": "comparison",
    "comparsion": "comparison", "comparrison": "comparison", "comparisions": "comparison",
}
# Upper-case labels the table lacks: the first main name they contain, else findings when they describe
# the exam (MIMIC's rule; "CHEST, TWO VIEWS:" introduces what was seen).
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum", "indication", "technique")
_EXAM_LABEL = re.compile(r"chest|portable|pa and lat|lateral and pa|ap and lat|lateral and ap|frontal and|"
                         r"two views|frontal view|pa view|ap view|one view|lateral view|bone window|"
                         r"frontal upright|frontal semi-upright|ribs")

_LABEL = r"[A-Za-z][A-Za-z ()/,&'-]{0,48}?"
_LINE_HEADER = re.compile(rf"^[ \t]*(?P<label>{_LABEL})[ \t]*:(?=\s|$)", re.M)
_INLINE_HEADER = re.compile(r"(?<=[.!?])[ \t]+(?P<label>[A-Z][A-Z ()/,&'-]{1,48}?)[ \t]*:(?=\s|$)")
_FINAL_REPORT = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.M | re.I)
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class ParsedReport:
    """A report's sections by name ("findings", "impression", "indication", "history", "comparison",
    "technique", "examination", "wet read", "preamble", ...; each text cleaned) and which fallback
    supplied them (one of FALLBACKS; None: FINDINGS and IMPRESSION were both found)."""

    sections: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None


def _section_name(label: str, *, line_start: bool) -> str | None:
    """The section a header label opens, or None when it is not a header (see the module docstring)."""
    key = " ".join(label.lower().split())
    if key in SECTION_NAMES:
        return SECTION_NAMES[key]
    if not line_start or label != label.upper():
        return None
    for main in _MAIN_SECTIONS:
        if main in key:
            return main
    return "findings" if _EXAM_LABEL.search(key) else None


def _headers(text: str) -> list[tuple[str, int, int]]:
    """(section name, header start, content start) of each header, in order."""
    found = []
    for m in _LINE_HEADER.finditer(text):
        name = _section_name(m["label"], line_start=True)
        if name:
            found.append((name, m.start(), m.end()))
    for m in _INLINE_HEADER.finditer(text):
        key = " ".join(m["label"].lower().split())
        if key in SECTION_NAMES:
            found.append((SECTION_NAMES[key], m.start("label"), m.end()))
    return sorted(found, key=lambda h: h[1])


def _paragraphs(text: str) -> list[str]:
    return [p for p in (clean_report(x) for x in _PARAGRAPH.split(text)) if p]


def _split_off_preamble(text: str) -> tuple[str, str | None, str]:
    """(body, preamble name, preamble text): the text before a FINAL REPORT line is a preamble."""
    m = _FINAL_REPORT.search(text)
    if not m:
        return text, None, ""
    before, body = text[:m.start()], text[m.end():]
    heads = _headers(before)
    if heads and not clean_report(before[:heads[0][1]]) and heads[0][0] in ("wet read", "addendum"):
        return body, heads[0][0], clean_report(before[heads[0][2]:])
    return body, "preamble", clean_report(before)


def parse_report(text: str) -> ParsedReport:
    """A report's sections and the fallback that supplied findings / impression (module docstring)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    body, pre_name, pre_text = _split_off_preamble(text)
    heads = _headers(body)
    entries: list[list] = []  # [name, raw text]; several entries may share a name
    lead = body[:heads[0][1]] if heads else body
    for i, (name, _, start) in enumerate(heads):
        end = heads[i + 1][1] if i + 1 < len(heads) else len(body)
        entries.append([name, body[start:end]])
    fallback = header_fallback({name: clean_report(raw) for name, raw in entries})
    last_paragraph = None
    if fallback == "none":
        if heads:
            paras = _paragraphs(entries[-1][1])
            if len(paras) >= 2:
                entries[-1][1], last_paragraph = "\n\n".join(paras[:-1]), paras[-1]
        else:
            paras = _paragraphs(lead)
            if paras:
                lead, last_paragraph = "\n\n".join(paras[:-1]), paras[-1]
        fallback = "last paragraph" if last_paragraph else "none"
    sections: dict[str, str] = {}

    def add(name, raw):
        cleaned = clean_report(raw)
        if cleaned:
            sections[name] = f"{sections[name]}\n{cleaned}" if name in sections else cleaned

    if pre_name:
        add(pre_name, pre_text)
    add("preamble", lead)
    for name, raw in entries:
        add(name, raw)
    if last_paragraph:
        add("impression", last_paragraph)
    return ParsedReport(sections, fallback)


def header_fallback(sections: dict[str, str]) -> str | None:
    """The fallback that sections found under their headers amount to: None (FINDINGS and IMPRESSION both
    hold text), "impression only", "findings only" or "none" (parse_report then looks for a last paragraph)."""
    has_f, has_i = bool(sections.get("findings")), bool(sections.get("impression"))
    return None if has_f and has_i else "impression only" if has_i else "findings only" if has_f else "none"


def section_report(text: str) -> dict[str, str]:
    """A report's sections by lower-case name, e.g. {"indication": ..., "findings": ..., "impression": ...};
    `parse_report(text).fallback` says which fallback (if any) supplied findings / impression."""
    return parse_report(text).sections


# --------------------------------------------------------------------------------------------------
# cleaning

# IU X-ray replaces dates, names and some words by "XXXX"; a run stands alone (between spaces or
# punctuation), or joins others by hyphens or slashes ("XXXX-XXXX"), or prefixes a word ("XXXX-year-old").
_XXXX = re.compile(r"(-?)(X{4,}(?:[ \t]*[-/][ \t]*X{4,})*)(-?)")
_RULE_LINE = re.compile(r"^[ \t]*(?:_{5,}|-{5,}|={5,}|\*{5,})[ \t]*$", re.M)
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+(?=[.,;:!?)](?:\s|$))")  # not "with ?effusion"


def _drop_xxxx(m: re.Match) -> str:
    s, a, b = m.string, m.start(2), m.end(2)
    if (a > 0 and s[a - 1].isalnum()) or (b < len(s) and s[b].isalnum()):
        return m[0]  # inside a word ("XXXXL"): not a de-identification token
    left = m[1] if m[1] and (m.start() == 0 or not s[m.start() - 1].isalnum()) else ""
    right = m[3] if m[3] and not (m.end() < len(s) and s[m.end()].isalpha()) else ""
    return left + right  # "x-XXXX" loses its dangling hyphen, "XXXX-year-old" its joining one


def clean_report(text: str) -> str:
    """Report text normalised: CR/LF to LF, IU X-ray's "XXXX" de-identification tokens removed (alone,
    hyphen- or slash-joined "XXXX-XXXX", or hyphen-attached "XXXX-year-old" → "year-old"), rule lines
    (_____ / ----- / =====) turned into paragraph breaks, runs of spaces and tabs to one space, no space
    before a . , ; : ! ? ) that ends a word (MIMIC's "with ?effusion" keeps its space), each line
    stripped, blank lines collapsed to one (a paragraph break), the whole stripped. MIMIC's "___"
    placeholders are kept (they stand where words were)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = _XXXX.sub(_drop_xxxx, text)
    text = _RULE_LINE.sub("", text)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    lines = [_SPACE_BEFORE_PUNCT.sub("", re.sub(r"^[,;:]\s*", "", line)) for line in lines]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


# --------------------------------------------------------------------------------------------------
# sentences and words

# Abbreviations whose period does not end a sentence. Titles never do; the others do when an upper-case
# letter follows ("... at 3 p.m. The ..."), not otherwise ("pneumonia vs. atelectasis", "approx. 2 cm").
_TITLES = frozenset({"dr", "mr", "mrs", "ms", "prof", "st", "sr", "jr"})
_ABBREVIATIONS = frozenset({"e.g", "i.e", "vs", "approx", "cf", "fig", "a.m", "p.m", "incl", "resp", "etc",
                            "b.i.d", "q.d", "r/o"})
# A list marker at a sentence's start: "1." "2)" "-" "*" "•" followed by a space.
_MARKER = re.compile(r"(?:(?P<n>\d{1,2})[.)]|[-*•])(?=\s)")
# Hard breaks: a blank line, or a line break before a list marker.
_HARD_BREAK = re.compile(r"\n[^\S\n]*\n\s*|\n(?=[^\S\n]*(?:\d{1,2}[.)]|[-*•])[ \t])")  # \r counts as a space
_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z./]*)$")


def _ends_sentence(text: str, start: int, m: re.Match) -> bool:
    """Whether the punctuation run `m` (in the sentence begun at `start`) ends the sentence."""
    if "." not in m[0]:  # "?" / "!" end a sentence after a word; "with ? effusion" keeps going
        return m.start() > start and not text[m.start() - 1].isspace()
    if "!" in m[0] or "?" in m[0]:
        return True
    w = _WORD_BEFORE.search(text, max(start, m.start() - 12), m.start())
    word = w[1].lower().rstrip(".") if w else ""
    if word in _TITLES:
        return False
    if word in _ABBREVIATIONS:
        nxt = re.compile(r"\s*(\S)").match(text, m.end())
        return bool(nxt and nxt[1].isupper())
    return True


def _split_block(text: str, pos: int, end: int, spans: list[tuple[int, int]]) -> None:
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return
        marker = _MARKER.match(text, pos, end)
        number = None
        if marker:
            number = int(marker["n"]) if marker["n"] else None
            pos = marker.end()
            while pos < end and text[pos].isspace():
                pos += 1
            if pos >= end:
                return
        start = pos
        stop = resume = limit = end
        if number is not None:  # "1. Pneumonia 2. Effusion": the next number opens the next sentence
            nxt = re.compile(rf"(?<=\s){number + 1}[.)](?=\s)").search(text, start, end)
            if nxt:
                stop = resume = limit = nxt.start()
        for m in _END.finditer(text, start, limit):
            if _ends_sentence(text, start, m):
                stop = resume = m.end()
                break
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        if any(c.isalnum() for c in text[start:stop]):
            spans.append((start, stop))
        pos = resume


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the sentences of `text`, in order; text[start:end] is one
    sentence without its list marker and without surrounding whitespace.

    Rules: a sentence ends at . ! or ? (with any closing quote or bracket) followed by whitespace or the
    end. Not at a decimal point ("2.5 cm": no space follows), not after a title ("Dr. ___"), and not after
    an abbreviation ("e.g.", "vs.", "approx.", "a.m.", ...) unless an upper-case letter follows; "?" and
    "!" right after a space ("with ? effusion", MIMIC's "question of") end nothing. A blank line always
    ends a sentence; a single line break is a space (reports wrap lines at ~79 characters) unless the next
    line starts with a list marker. List markers ("1." "2)" "-" "*" "•") that open a sentence are not
    part of it, and within a sentence opened by marker n, "n+1." opens the next one ("1. Pneumonia
    2. Effusion"). Spans holding no letter or digit ("." alone) are skipped."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _HARD_BREAK.finditer(text):
        _split_block(text, pos, m.start(), spans)
        pos = m.end()
    _split_block(text, pos, len(text), spans)
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (rules in sentence_spans), each with its whitespace runs (line breaks
    included) collapsed to one space: "1. Left lower lobe pneumonia.\\n2. Small effusion." →
    ["Left lower lobe pneumonia.", "Small effusion."]."""
    return [" ".join(text[a:b].split()) for a, b in sentence_spans(text)]


# A decimal number ("2.5"), a run of letters and digits ("t12", "cm", "3"), a run of underscores (MIMIC's
# "___" placeholder), or any other single non-space character (punctuation, one token each).
_WORD = re.compile(r"\d+(?:\.\d+)+|[^\W_]+|_+|[^\w\s]")


def word_spans(sentence: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the words of `sentence` (rules in split_words)."""
    return [m.span() for m in _WORD.finditer(sentence)]


def split_words(sentence: str) -> list[str]:
    """The words of a sentence, lower-cased, as radiology-report pipelines tokenise them: runs of letters
    and digits ("t12", "3", "cm"), decimal numbers kept whole ("2.5"), MIMIC's "___" as one word, and
    each punctuation mark a word of its own (hyphens and apostrophes too: "well-defined" → "well", "-",
    "defined"; BERT's pre-tokeniser splits the same way, so word pieces never straddle two words here
    except in decimals, which it splits and this keeps). "Left 2.5cm nodule." → ["left", "2.5", "cm",
    "nodule", "."]."""
    return [sentence[a:b].lower() for a, b in word_spans(sentence)]
