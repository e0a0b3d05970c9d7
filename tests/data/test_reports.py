"""Report text: MIMIC-style sectioning and its fallbacks, IU X-ray cleaning, sentences and words.

The reports below are written in the styles of MIMIC-CXR (leading spaces, " " blank lines, 79-column
wrapping, "___" placeholders, WET READ preambles) and IU X-ray (XXXX tokens); none is a real report."""

import pytest

from cxrfast.data.reports import (FALLBACKS, clean_report, parse_report, section_report, sentence_spans,
                                  split_sentences, split_words, word_spans)

MIMIC_FULL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___ year old woman with ?pleural effusion  // ?pleural effusion
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 Heart size is mildly enlarged.  Moderate left pleural effusion is new.  Small
 right effusion is unchanged.  The upper lungs are clear.  Left basilar opacity
 likely reflects atelectasis.  There is no pneumothorax.
 
 IMPRESSION: 
 
 Moderate left pleural effusion, new since ___.
"""

MIMIC_WET_READ = """ WET READ: ___ ___ ___ 3:48 PM
  Interval placement of right IJ line, tip in the mid SVC.  No pneumothorax.
 ______________________________________________________________________________
                                 FINAL REPORT
 HISTORY:  Line placement.
 
 FINDINGS AND IMPRESSION:  1. Right internal jugular line terminates in the mid
 SVC.  2. No pneumothorax.  Lungs are clear, heart size normal.
"""

MIMIC_ONLY_IMPRESSION = """                                 FINAL REPORT
 INDICATION:  Fever.
 
 COMPARISON:  None.
 
 IMPRESSION:  
 
 No acute cardiopulmonary process.
"""

MIMIC_NO_HEADERS = """ PORTABLE CHEST OF ___
 
 Comparison to ___.  The patient is intubated, the tube tip is 4.5 cm above the
 carina.
 
 Mild pulmonary edema has improved.  No new consolidation.
"""

LOWER_CASE = """Indication: shortness of breath
Comparison: none
Findings: The heart is normal in size. Heart size: normal.
No focal consolidation, effusion, or pneumothorax.
Impression: no acute disease."""


def test_mimic_report_sections():
    parsed = parse_report(MIMIC_FULL)
    assert parsed.fallback is None
    s = parsed.sections
    assert s["examination"] == "CHEST (PA AND LAT)"
    assert s["indication"] == "___ year old woman with ?pleural effusion // ?pleural effusion"
    assert s["technique"] == "Chest PA and lateral" and s["comparison"] == "___"
    assert s["findings"].startswith("Heart size is mildly enlarged. Moderate left pleural effusion is new. Small\n")
    assert s["findings"].endswith("There is no pneumothorax.")
    assert s["impression"] == "Moderate left pleural effusion, new since ___."
    assert "preamble" not in s  # nothing but the FINAL REPORT line before the first header
    assert section_report(MIMIC_FULL) == s


def test_wet_read_preamble_is_kept_apart_and_findings_and_impression_is_the_impression():
    parsed = parse_report(MIMIC_WET_READ)
    s = parsed.sections
    assert s["wet read"] == ("___ ___ ___ 3:48 PM\n"
                             "Interval placement of right IJ line, tip in the mid SVC. No pneumothorax.")
    assert s["history"] == "Line placement."
    assert s["impression"].startswith("1. Right internal jugular line terminates in the mid\nSVC.")
    assert "findings" not in s
    assert parsed.fallback == "impression only"
    assert split_sentences(s["impression"]) == ["Right internal jugular line terminates in the mid SVC.",
                                                "No pneumothorax.", "Lungs are clear, heart size normal."]


def test_wet_read_never_feeds_the_last_paragraph_fallback():
    text = " WET READ: Small effusion.\n ____________\n    FINAL REPORT\n INDICATION: Cough.\n \n Lungs clear.\n"
    parsed = parse_report(text)
    assert parsed.sections["wet read"] == "Small effusion."
    assert parsed.sections["impression"] == "Lungs clear." and parsed.fallback == "last paragraph"
    assert parsed.sections["indication"] == "Cough."


def test_only_an_impression():
    parsed = parse_report(MIMIC_ONLY_IMPRESSION)
    assert parsed.fallback == "impression only"
    assert parsed.sections == {"indication": "Fever.", "comparison": "None.",
                               "impression": "No acute cardiopulmonary process."}


def test_only_findings():
    parsed = parse_report("FINDINGS: Lungs are clear.")
    assert parsed.fallback == "findings only" and parsed.sections == {"findings": "Lungs are clear."}


def test_no_headers_the_last_paragraph_is_the_impression():
    parsed = parse_report(MIMIC_NO_HEADERS)
    assert parsed.fallback == "last paragraph"
    assert parsed.sections["impression"] == "Mild pulmonary edema has improved. No new consolidation."
    assert parsed.sections["preamble"] == ("PORTABLE CHEST OF ___\n\nComparison to ___. The patient is intubated, "
                                           "the tube tip is 4.5 cm above the\ncarina.")
    one = parse_report("The lungs are clear.\nNo effusion.")
    assert one.fallback == "last paragraph" and one.sections == {"impression": "The lungs are clear.\nNo effusion."}


def test_headers_without_findings_take_the_last_paragraph_of_the_last_section():
    text = " INDICATION:  Cough.\n \n COMPARISON:  None.\n \n The lungs are clear.  No effusion.\n"
    parsed = parse_report(text)
    assert parsed.fallback == "last paragraph"
    assert parsed.sections == {"indication": "Cough.", "comparison": "None.",
                               "impression": "The lungs are clear. No effusion."}


def test_nothing_to_stand_for_findings_is_fallback_none():
    assert parse_report(" INDICATION: Cough.\n COMPARISON: None.").fallback == "none"
    assert parse_report("   \n \n").fallback == "none"
    assert parse_report("").sections == {}


def test_lower_case_headers_and_unknown_labels_stay_text():
    parsed = parse_report(LOWER_CASE)
    s = parsed.sections
    assert parsed.fallback is None
    assert s["indication"] == "shortness of breath" and s["comparison"] == "none"
    # "Heart size:" is no section: the table does not know it and it is not upper case
    assert s["findings"] == ("The heart is normal in size. Heart size: normal.\n"
                             "No focal consolidation, effusion, or pneumothorax.")
    assert s["impression"] == "no acute disease."


def test_upper_case_labels_follow_mimic_normalisation():
    text = (" CHEST, PA AND LATERAL:\n INDICATION:  Trauma.\n FINAL IMPRESSION:  No fracture.\n"
            " FINDINGS:\n LUNGS:  Clear.\n PLEURA:  No effusion.\n CLINICAL HISTORY:  Fall.\n")
    parsed = parse_report(text)
    s = parsed.sections
    # the title "CHEST, PA AND LATERAL:" opens an empty findings section, dropped; LUNGS / PLEURA are sub-headings
    assert s["findings"] == "LUNGS: Clear.\nPLEURA: No effusion."
    assert s["impression"] == "No fracture." and s["history"] == "Fall." and s["indication"] == "Trauma."
    assert parsed.fallback is None


def test_flattened_report_with_inline_headers():
    parsed = parse_report("INDICATION: Cough. COMPARISON: None. FINDINGS: Lungs are clear. IMPRESSION: Normal chest.")
    assert parsed.sections == {"indication": "Cough.", "comparison": "None.", "findings": "Lungs are clear.",
                               "impression": "Normal chest."}


def test_a_section_met_twice_keeps_both_texts_and_misspellings_are_known():
    parsed = parse_report("FINDINGS: Heart normal.\nIMPRESSON: Normal.\nFINDINGS: Lungs clear.")
    assert parsed.sections == {"findings": "Heart normal.\nLungs clear.", "impression": "Normal."}


def test_times_and_colons_inside_text_are_not_headers():
    parsed = parse_report("IMPRESSION: Dr. ___ was paged at 10:45 with these findings: small effusion.")
    assert parsed.sections == {"impression": "Dr. ___ was paged at 10:45 with these findings: small effusion."}


def test_crlf_reports():
    assert parse_report("FINDINGS: A.\r\n\r\nIMPRESSION: B.\r\n").sections == {"findings": "A.", "impression": "B."}


# ---------------------------------------------------------------------------------------------- cleaning


def test_clean_report_removes_iu_xxxx_tokens():
    assert clean_report("There are no XXXX of a pleural effusion.") == "There are no of a pleural effusion."
    assert clean_report("Normal chest x-XXXX.") == "Normal chest x."
    assert clean_report("XXXX-year-old female with chest pain.") == "year-old female with chest pain."
    assert clean_report("Chest radiographs XXXX-XXXX and XXXX / XXXX.") == "Chest radiographs and."
    assert clean_report("Dated XXXX XXXX , no change.") == "Dated, no change."
    assert clean_report("XXXX, the lungs are clear.") == "the lungs are clear."
    # not de-identification: X runs inside a word, shorter runs
    assert clean_report("Size XXXXL shirt, XXX.") == "Size XXXXL shirt, XXX."


def test_clean_report_whitespace():
    raw = "  Heart   size\tnormal .\r\n\r\n\r\n   Lungs clear ?effusion  \n ____________ \n  No PTX.  "
    # a rule line separates (MIMIC's addenda): it becomes a paragraph break
    assert clean_report(raw) == "Heart size normal.\n\nLungs clear ?effusion\n\nNo PTX."
    assert clean_report("a\u00a0b") == "a b"


# ---------------------------------------------------------------------------------------------- sentences


@pytest.mark.parametrize("text, expected", [
    ("The lungs are clear. No effusion.", ["The lungs are clear.", "No effusion."]),
    # decimals, abbreviations, titles
    ("A 2.5 cm nodule. Stable since 1.5 years.", ["A 2.5 cm nodule.", "Stable since 1.5 years."]),
    ("Findings discussed with Dr. ___ at 3 p.m. The patient was informed.",
     ["Findings discussed with Dr. ___ at 3 p.m.", "The patient was informed."]),
    ("Atelectasis vs. pneumonia, e.g. in the left base. Approx. 2 cm.",
     ["Atelectasis vs. pneumonia, e.g. in the left base.", "Approx. 2 cm."]),
    # enumerations, on one line or on several, with and without closing periods
    ("1. Pneumonia. 2. Small effusion.", ["Pneumonia.", "Small effusion."]),
    ("1. Right lower lobe pneumonia 2. Small effusion 3. Cardiomegaly",
     ["Right lower lobe pneumonia", "Small effusion", "Cardiomegaly"]),
    ("IMPRESSION:\n1) Pneumonia\n2) Effusion\n- NG tube in place\n* Line unchanged",
     ["IMPRESSION:", "Pneumonia", "Effusion", "NG tube in place", "Line unchanged"]),
    # line breaks: wrapping is a space, a blank line ends a sentence
    ("Small left effusion, not\nchanged since ___\n\nNo pneumothorax",
     ["Small left effusion, not changed since ___", "No pneumothorax"]),
    # "?" as MIMIC's "question of" after a space ends nothing; after a word it ends the sentence
    ("Eval for ? pneumonia. Is there an effusion? No.", ["Eval for ? pneumonia.", "Is there an effusion?", "No."]),
    # lower-cased, pre-tokenised reports still split; stray periods are no sentences
    ("the heart is normal . the lungs are clear . .", ["the heart is normal .", "the lungs are clear ."]),
    ('Reads "no change." Then stable.', ['Reads "no change."', "Then stable."]),
    ("Small effusion\r\n\r\nNo pneumothorax\r\n2. Line in place", ["Small effusion", "No pneumothorax",
                                                                 "Line in place"]),
    ("", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_sentence_spans_are_offsets_into_the_text():
    text = " 1. Left lower lobe\n pneumonia.\n 2. Small effusion. "
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["Left lower lobe\n pneumonia.", "Small effusion."]
    assert all(not text[a].isspace() and not text[b - 1].isspace() for a, b in spans)


@pytest.mark.parametrize("sentence, expected", [
    ("Left 2.5cm well-defined nodule at T12, patient's ___ .",
     ["left", "2.5", "cm", "well", "-", "defined", "nodule", "at", "t12", ",", "patient", "'", "s", "___", "."]),
    ("No PTX (seen on CXR 3/4).", ["no", "ptx", "(", "seen", "on", "cxr", "3", "/", "4", ")", "."]),
    ("Tip 4.5 cm above carina; 1,200 mL", ["tip", "4.5", "cm", "above", "carina", ";", "1", ",", "200", "ml"]),
    ("Ödème pulmonaire", ["ödème", "pulmonaire"]),
    ("", []),
])
def test_split_words(sentence, expected):
    assert split_words(sentence) == expected
    assert [sentence[a:b].lower() for a, b in word_spans(sentence)] == expected


def test_words_of_sentences_of_a_section():
    """The path the tokenizer takes: sections → sentences → words, each index meaningful."""
    impression = parse_report(MIMIC_WET_READ).sections["impression"]
    words = [split_words(s) for s in split_sentences(impression)]
    assert words[1] == ["no", "pneumothorax", "."]
    assert words[0][:4] == ["right", "internal", "jugular", "line"]


def test_spans_hold_on_random_report_like_text():
    """Invariants on text drawn from report pieces (torch's seeded stream): ordered, disjoint, trimmed spans
    holding a letter or digit; the words of a sentence are its non-space characters in order."""
    import torch

    pieces = ["The", "lungs", "are", "clear", ".", "2.5", "cm", "Dr.", "e.g.", "1.", "2)", "-", "?", "!", "___",
              "XXXX", "\n", "\n\n", " \n ", "vs.", "(", ")", "IMPRESSION:", "no", "effusion", ",", "T12", "\r\n"]
    for _ in range(300):
        idx = torch.randint(len(pieces), (int(torch.randint(0, 40, ())),)).tolist()
        text = "".join(pieces[i] + (" " if torch.rand(()) < 0.7 else "") for i in idx)
        spans = sentence_spans(text)
        assert all(0 <= a < b <= len(text) for a, b in spans)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
        assert all(not text[a].isspace() and not text[b - 1].isspace() for a, b in spans)
        assert all(any(c.isalnum() for c in text[a:b]) for a, b in spans)
        for sentence in split_sentences(text):
            assert "".join(split_words(sentence)) == "".join(sentence.split()).lower()
        assert parse_report(text).fallback in FALLBACKS
