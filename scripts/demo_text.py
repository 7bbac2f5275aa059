"""Seeded generators of synthetic text for the demo sites and the shipped corpus.

Four domains with deliberately different vocabularies and layouts, so that the demo
federation is non-IID:

* ``radiology``: free-text imaging reports (a hospital's radiology department);
* ``pharmacy``: pipe-separated dispensing log lines (an outpatient clinic's pharmacy);
* ``laboratory``: structured laboratory result summaries (a reference laboratory);
* ``general``: everyday English prose used only in the base-model corpus.

Every generator draws only from the :class:`random.Random` it is given, so the same
seed always yields the same text. All content is invented; no real patient data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta

TextGenerator = Callable[[random.Random], str]

_FIRST_DAY = date(2024, 1, 1)


def _day(rng: random.Random) -> str:
    return (_FIRST_DAY + timedelta(days=rng.randrange(366))).isoformat()


def _clock(rng: random.Random) -> str:
    return f"{rng.randrange(7, 20):02d}:{rng.randrange(60):02d}"


# --------------------------------------------------------------------------- radiology

_LOBES = ("right upper", "right middle", "right lower", "left upper", "left lower")
_SIDES = ("right", "left", "bilateral")
_INDICATIONS = (
    "cough and fever",
    "shortness of breath",
    "chest pain after a fall",
    "follow-up of a known nodule",
    "headache with vomiting",
    "abdominal pain in the right lower quadrant",
    "low back pain radiating to the leg",
    "right upper quadrant pain after meals",
    "preoperative assessment",
    "suspected pneumonia",
)
_COMPARISONS = ("none available", "prior study from last year", "radiograph of 3 months ago")


def _chest_findings(rng: random.Random) -> tuple[list[str], str]:
    findings = [
        rng.choice(
            (
                "The cardiomediastinal silhouette is within normal limits.",
                "Heart size is mildly enlarged.",
                "The heart size is normal.",
            )
        )
    ]
    if rng.random() < 0.5:
        lobe = rng.choice(_LOBES)
        findings.append(f"There is a patchy opacity in the {lobe} lobe.")
        impression = (
            f"Findings compatible with {lobe} lobe pneumonia in the right clinical setting."
        )
    elif rng.random() < 0.5:
        size = rng.randrange(4, 19)
        lobe = rng.choice(_LOBES)
        findings.append(f"A {size} mm nodule projects over the {lobe} lobe.")
        impression = f"{size} mm pulmonary nodule; CT of the chest is recommended."
    else:
        findings.append("The lungs are clear.")
        impression = "No acute cardiopulmonary process."
    side = rng.choice(_SIDES)
    findings.append(
        rng.choice(
            (
                "No pleural effusion or pneumothorax.",
                f"Small {side} pleural effusion.",
                "No pneumothorax.",
            )
        )
    )
    return findings, impression


def _head_findings(rng: random.Random) -> tuple[list[str], str]:
    findings = [
        "No acute intracranial hemorrhage, mass effect or midline shift.",
        rng.choice(
            (
                "The ventricles and sulci are normal in size.",
                "Mild generalized volume loss, appropriate for age.",
                "Mild periventricular white matter hypodensity.",
            )
        ),
    ]
    if rng.random() < 0.3:
        findings.append("Mucosal thickening in the maxillary sinuses.")
    impression = rng.choice(
        (
            "No acute intracranial abnormality.",
            "Chronic small vessel ischemic change; no acute abnormality.",
        )
    )
    return findings, impression


def _abdomen_findings(rng: random.Random) -> tuple[list[str], str]:
    size = rng.randrange(5, 40) / 10
    segment = rng.randrange(2, 9)
    findings = [
        rng.choice(
            (
                "The liver enhances homogeneously.",
                f"A {size} cm hypodense lesion in hepatic segment {segment}, likely a simple cyst.",
            )
        ),
        rng.choice(
            (
                "The appendix is normal.",
                "The appendix is dilated to 11 mm with surrounding fat stranding.",
            )
        ),
        "No free fluid or free air.",
    ]
    if "dilated" in findings[1]:
        impression = "Acute uncomplicated appendicitis."
    else:
        impression = "No acute abdominal or pelvic abnormality."
    return findings, impression


def _spine_findings(rng: random.Random) -> tuple[list[str], str]:
    level = rng.randrange(1, 5)
    levels = f"L{level}-L{level + 1}"
    findings = [
        f"Disc desiccation at {levels}.",
        rng.choice(
            (
                f"Broad-based disc bulge at {levels} with mild foraminal narrowing.",
                f"Left paracentral disc protrusion at {levels} "
                "contacting the traversing nerve root.",
            )
        ),
        "The conus terminates normally.",
    ]
    impression = f"Degenerative disc disease, most marked at {levels}."
    return findings, impression


def _gallbladder_findings(rng: random.Random) -> tuple[list[str], str]:
    duct = rng.randrange(3, 9)
    stones = rng.random() < 0.6
    findings = [
        "The gallbladder contains multiple shadowing calculi."
        if stones
        else "The gallbladder is normal without calculi.",
        f"The common bile duct measures {duct} mm.",
        "The liver is normal in echotexture.",
    ]
    impression = "Cholelithiasis without cholecystitis." if stones else "Normal ultrasound."
    return findings, impression


_EXAMS: tuple[tuple[str, Callable[[random.Random], tuple[list[str], str]]], ...] = (
    ("CHEST RADIOGRAPH PA AND LATERAL", _chest_findings),
    ("CT HEAD WITHOUT CONTRAST", _head_findings),
    ("CT ABDOMEN AND PELVIS WITH CONTRAST", _abdomen_findings),
    ("MRI LUMBAR SPINE WITHOUT CONTRAST", _spine_findings),
    ("ULTRASOUND RIGHT UPPER QUADRANT", _gallbladder_findings),
)


def radiology_report(rng: random.Random) -> str:
    """Return one imaging report: exam, indication, comparison, findings, impression."""
    exam, findings_for = rng.choice(_EXAMS)
    findings, impression = findings_for(rng)
    return (
        f"{exam}. Indication: {rng.choice(_INDICATIONS)}. "
        f"Comparison: {rng.choice(_COMPARISONS)}. Findings: {' '.join(findings)} "
        f"Impression: {impression}"
    )


# ---------------------------------------------------------------------------- pharmacy

_DRUGS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    (
        "amoxicillin",
        ("250 mg", "500 mg"),
        "capsule",
        ("1 capsule by mouth three times daily for 7 days",),
    ),
    (
        "metformin",
        ("500 mg", "850 mg", "1000 mg"),
        "tablet",
        ("1 tablet by mouth twice daily with meals",),
    ),
    ("lisinopril", ("5 mg", "10 mg", "20 mg"), "tablet", ("1 tablet by mouth once daily",)),
    ("atorvastatin", ("10 mg", "20 mg", "40 mg"), "tablet", ("1 tablet by mouth at bedtime",)),
    ("omeprazole", ("20 mg", "40 mg"), "capsule", ("1 capsule by mouth before breakfast",)),
    ("salbutamol", ("100 mcg",), "inhaler", ("2 puffs inhaled every 4 to 6 hours as needed",)),
    ("sertraline", ("50 mg", "100 mg"), "tablet", ("1 tablet by mouth once daily in the morning",)),
    (
        "levothyroxine",
        ("25 mcg", "50 mcg", "100 mcg"),
        "tablet",
        ("1 tablet by mouth on an empty stomach",),
    ),
    (
        "ibuprofen",
        ("200 mg", "400 mg"),
        "tablet",
        ("1 tablet by mouth every 8 hours with food as needed",),
    ),
    (
        "warfarin",
        ("1 mg", "3 mg", "5 mg"),
        "tablet",
        ("as directed by the anticoagulation clinic",),
    ),
    ("insulin glargine", ("100 units/mL",), "pen", ("inject 18 units subcutaneously at night",)),
    ("prednisolone", ("5 mg", "25 mg"), "tablet", ("taper as per the attached schedule",)),
)
_PHARMACY_NOTES = (
    "counselled on side effects",
    "generic substitution accepted",
    "prior authorization pending with insurer",
    "interaction check: no major interactions",
    "interaction check: warfarin level monitoring advised",
    "patient declined counselling",
    "delivered to home address",
    "first fill, leaflet provided",
    "allergy list reviewed, no known drug allergies",
)


def pharmacy_dispensing_log(rng: random.Random) -> str:
    """Return one dispensing log line: time, prescription, drug, quantity, sig, notes."""
    name, strengths, form, sigs = rng.choice(_DRUGS)
    quantity = rng.choice((14, 21, 28, 30, 56, 60, 90)) if form in {"capsule", "tablet"} else 1
    fields = [
        f"DISPENSE {_day(rng)} {_clock(rng)}",
        f"Rx {rng.randrange(100000, 999999)}",
        f"{name} {rng.choice(strengths)} {form}",
        f"qty {quantity}",
        f"sig: {rng.choice(sigs)}",
        f"refills {rng.randrange(0, 6)}",
        f"RPh-{rng.randrange(1, 13):02d}",
        rng.choice(_PHARMACY_NOTES),
    ]
    if rng.random() < 0.2:
        fields.append(f"partial fill, balance owed {rng.randrange(1, 30)}")
    return " | ".join(fields)


# -------------------------------------------------------------------------- laboratory

# (analyte, unit, reference low, reference high, decimals)
_Analyte = tuple[str, str, float, float, int]
_PANELS: tuple[tuple[str, tuple[_Analyte, ...]], ...] = (
    (
        "Basic metabolic panel",
        (
            ("Sodium", "mmol/L", 135, 145, 0),
            ("Potassium", "mmol/L", 3.5, 5.1, 1),
            ("Chloride", "mmol/L", 98, 107, 0),
            ("Bicarbonate", "mmol/L", 22, 29, 0),
            ("Urea", "mmol/L", 2.5, 7.8, 1),
            ("Creatinine", "umol/L", 60, 110, 0),
            ("Glucose", "mmol/L", 3.9, 5.6, 1),
        ),
    ),
    (
        "Complete blood count",
        (
            ("Hemoglobin", "g/L", 120, 160, 0),
            ("White cell count", "x10^9/L", 4.0, 11.0, 1),
            ("Platelets", "x10^9/L", 150, 400, 0),
            ("Hematocrit", "L/L", 0.36, 0.46, 2),
        ),
    ),
    (
        "Lipid profile",
        (
            ("Total cholesterol", "mmol/L", 3.0, 5.2, 1),
            ("LDL cholesterol", "mmol/L", 1.0, 3.4, 1),
            ("HDL cholesterol", "mmol/L", 1.0, 2.2, 1),
            ("Triglycerides", "mmol/L", 0.5, 1.7, 1),
        ),
    ),
    (
        "Liver function tests",
        (
            ("ALT", "U/L", 7, 56, 0),
            ("AST", "U/L", 10, 40, 0),
            ("Alkaline phosphatase", "U/L", 44, 147, 0),
            ("Total bilirubin", "umol/L", 3, 21, 0),
            ("Albumin", "g/L", 35, 50, 0),
        ),
    ),
    (
        "Thyroid function",
        (("TSH", "mIU/L", 0.4, 4.0, 2), ("Free T4", "pmol/L", 9.0, 19.0, 1)),
    ),
    (
        "Coagulation screen",
        (("PT", "s", 11.0, 13.5, 1), ("INR", "", 0.8, 1.2, 1), ("aPTT", "s", 25, 35, 0)),
    ),
)
_SPECIMENS = ("serum", "plasma", "whole blood EDTA", "citrated plasma")
_LAB_COMMENTS = (
    "Sample hemolysed; potassium may be falsely raised, repeat advised.",
    "Result phoned to the requesting clinician.",
    "Fasting sample.",
    "Non-fasting sample.",
    "Delta check passed.",
    "Verified by senior scientist.",
)


def _analyte_result(rng: random.Random, analyte: _Analyte) -> str:
    name, unit, low, high, decimals = analyte
    span = high - low
    value = round(rng.uniform(low - 0.35 * span, high + 0.35 * span), decimals)
    flag = " H" if value > high else " L" if value < low else ""
    unit_text = f" {unit}" if unit else ""
    return (
        f"{name} {value:.{decimals}f}{unit_text} (ref {low:.{decimals}f}-{high:.{decimals}f}){flag}"
    )


def laboratory_result(rng: random.Random) -> str:
    """Return one laboratory report: specimen, panel, flagged results, a comment."""
    panel, analytes = rng.choice(_PANELS)
    count = rng.randrange(min(3, len(analytes)), len(analytes) + 1)
    chosen = sorted(rng.sample(range(len(analytes)), count))
    results = "; ".join(_analyte_result(rng, analytes[index]) for index in chosen)
    return (
        f"Specimen LAB-{rng.randrange(10000, 99999)} {rng.choice(_SPECIMENS)} collected "
        f"{_day(rng)} {_clock(rng)}. {panel}: {results}. {rng.choice(_LAB_COMMENTS)}"
    )


# ----------------------------------------------------------------------------- general

_PEOPLE = (
    "my neighbour",
    "the old fisherman",
    "a young teacher",
    "our guide",
    "the baker on the corner",
    "my sister",
    "a group of students",
    "the night porter",
)
_PLACES = (
    "the harbour",
    "the city library",
    "a quiet village",
    "the market square",
    "the train station",
    "the edge of the forest",
    "the museum",
    "the garden behind the house",
)
_ACTIVITIES = (
    "walked slowly along the river",
    "baked fresh bread before sunrise",
    "read a long novel by the window",
    "repaired an old bicycle",
    "planted tomatoes and beans",
    "waited for the last bus",
    "painted the wooden fence blue",
    "wrote letters to distant friends",
    "cooked a large pot of soup",
    "played chess in the afternoon",
)
_TIMES = (
    "on Sunday morning",
    "late in the evening",
    "during the long winter",
    "after the storm",
    "every summer",
    "at the start of spring",
    "yesterday",
)
_WEATHER = (
    "The sky was grey and a light rain fell.",
    "The sun was warm and the wind was gentle.",
    "A thick fog covered the hills.",
    "Snow had settled on the rooftops.",
    "It was a clear and cold day.",
)
_REFLECTIONS = (
    "Nobody was in a hurry, and the time passed pleasantly.",
    "It was the kind of day that people remember for years.",
    "Later they agreed that the trip had been worth the effort.",
    "The smell of coffee drifted from an open door.",
    "Children laughed somewhere in the distance.",
    "Everything seemed calmer than usual.",
)


def general_prose(rng: random.Random) -> str:
    """Return a short everyday paragraph (weather, a person, a place, an activity)."""
    person = rng.choice(_PEOPLE)
    sentences = [
        rng.choice(_WEATHER),
        f"{person[0].upper()}{person[1:]} {rng.choice(_ACTIVITIES)} near "
        f"{rng.choice(_PLACES)} {rng.choice(_TIMES)}.",
        rng.choice(_REFLECTIONS),
    ]
    if rng.random() < 0.5:
        sentences.insert(2, f"Afterwards they went to {rng.choice(_PLACES)}.")
    return " ".join(sentences)


GENERATORS: dict[str, TextGenerator] = {
    "radiology": radiology_report,
    "pharmacy": pharmacy_dispensing_log,
    "laboratory": laboratory_result,
    "general": general_prose,
}
