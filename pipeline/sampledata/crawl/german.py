"""German local-news prose with German's own word statistics, for the sample crawl's German news pages.

Real German text shares fewer of its words with German's 50,000 most frequent than English does with English's,
because German writes compounds as one word ("Radwegsanierungskonzept"). These articles reproduce that: about
85% of their words are common ones (real German pages: 90% at the median, and down to 80% for one in twenty;
English: 96%), so English's document cut-off (90%) would drop them while German's own keeps them
(docs/filters.md). The pattern-built sentences of `text.GermanWriter` use only common words and miss this.
"""

from __future__ import annotations

import random

HEADS = ("Stadt", "Verkehrs", "Bahnhofs", "Wasser", "Energie", "Wohnungs", "Schul", "Kranken", "Hafen", "Markt",
         "Feuerwehr", "Radweg", "Wald", "Brücken", "Kita", "Friedhofs", "Bürger", "Abwasser", "Straßen", "Park")
MIDDLES = ("sanierungs", "planungs", "förder", "verkehrs", "bau", "betriebs", "gebühren", "prüf")
TAILS = ("planung", "gesellschaft", "konzept", "ausschuss", "förderung", "gebühren", "netz", "erweiterung",
         "sanierung", "verwaltung", "betrieb", "projekt", "beirat", "haushalt", "satzung", "gutachten", "umbau",
         "anlage", "versorgung", "beauftragte")
PLACE_PARTS = (("Nieder", "Ober", "Alt", "Neu", "Klein", "Groß", "Hohen"),
               ("wald", "brücken", "linden", "eichen", "mühl", "stein", "buchen", "rosen"),
               ("hausen", "feld", "dorf", "heim", "ingen", "bach", "berg", "au"))
SUBJECTS = ("Der Stadtrat", "Die Landesregierung", "Der Bürgermeister", "Die Verwaltung", "Der Kreistag",
            "Die Fraktion der Grünen", "Der Ortsbeirat", "Die Industrie- und Handelskammer")
DAYS = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag")
SENTENCES = (  # an article uses each at most once (Gopher's repetition rules see repeated word n-grams)
    "{subject} in {place} hat am {day} beschlossen, die {c} und die {c} noch in diesem Jahr fortzusetzen.",
    "Nach Angaben der {c} kostet die {c} rund {n} Millionen Euro, deutlich mehr als bisher geplant.",
    "Kritik kam von der {c}, die den Zeitplan der {c} für zu ehrgeizig hält und ein neues {c} fordert.",
    "Die Anwohner in {place} hatten sich schon im vergangenen Jahr über die {c} beschwert.",
    "Ob die {c} tatsächlich bis zum Herbst fertig wird, ist nach Einschätzung der {c} noch offen.",
    "Für die {c} stehen nach Auskunft des Kämmerers zusätzliche Mittel aus dem {c} bereit.",
    "Im {c} soll die {c} in der nächsten Sitzung noch einmal beraten werden.",
    "Wer Fragen zur {c} hat, kann sich an die {c} im Rathaus von {place} wenden.",
    "{subject} verweist darauf, dass die {c} seit {n} Jahren auf eine Entscheidung wartet.",
    "Bereits im Frühjahr hatte ein {c} gezeigt, dass die {c} dringend erneuert werden muss.",
    "Eltern aus {place} sammelten mehr als {n}00 Unterschriften gegen die geplante {c}.",
    "Die {c} will die Arbeiten nun in drei Abschnitten ausschreiben, um Zeit zu gewinnen.",
    "Während der Bauzeit wird der Verkehr über die {c} in {place} umgeleitet.",
    "Ein Sprecher der {c} sagte am {day}, man sei mit dem Ergebnis der {c} zufrieden.",
    "Unklar bleibt, wer die Folgekosten für die {c} übernehmen soll.",
    "Der Landkreis prüft derzeit, ob sich auch {place} an der {c} beteiligen kann.",
    "Im Juni beginnt zunächst die {c}, danach folgt die {c} am Ortsrand.",
    "Viele Vereine hoffen, dass die {c} auch ihnen neue Räume bringt.",
    "Die Opposition im Kreistag spricht von einem teuren Prestigeprojekt der {c}.",
    "Bis zur endgültigen Entscheidung über die {c} bleibt die alte {c} in Betrieb.",
)


class GermanNewsWriter:
    """Local-news paragraphs, titles, captions and alt texts in German (the writer interface of `text`)."""

    lang = "de"

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.unused = list(SENTENCES)
        rng.shuffle(self.unused)

    def compound(self) -> str:
        middle = self.rng.choice(MIDDLES) if self.rng.random() < 0.5 else ""
        return self.rng.choice(HEADS) + middle + self.rng.choice(TAILS)

    def place(self) -> str:
        return "".join(self.rng.choice(parts) for parts in PLACE_PARTS)

    def sentence(self) -> str:
        text = self.unused.pop()
        while "{c}" in text:
            text = text.replace("{c}", self.compound(), 1)
        while "{place}" in text:
            text = text.replace("{place}", self.place(), 1)
        return text.format(subject=self.rng.choice(SUBJECTS), day=self.rng.choice(DAYS), n=self.rng.randint(2, 40))

    def paragraph(self) -> str:
        """Three sentences: an article has six paragraphs (the templates last for one)."""
        return " ".join(self.sentence() for _ in range(3))

    def title(self) -> str:
        return f"{self.compound()} in {self.place()}: {self.rng.choice(SUBJECTS)} entscheidet"

    def caption(self) -> str:
        return f"Die Baustelle der {self.compound()} in {self.place()} im Frühjahr."

    def alt_text(self) -> str:
        return f"Blick auf die {self.compound()} am Stadtrand von {self.place()}"
