"""Prose for the sample crawl, written from the project's own word lists and sentence patterns.

No third-party text is committed: every sentence is assembled here from short hand-written word
lists, deterministic from the caller's `random.Random`. The patterns keep their fixed parts short
and the vocabulary wide, so two pages share few word 5-grams (they are not near duplicates under
MinHash) while the text still reads as ordinary English: real stopwords, sentences of normal
length, punctuation. German, French and Spanish writers give the non-English pages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# English vocabulary
# --------------------------------------------------------------------------------------------

GENERAL_NOUNS = (
    "village", "river", "bridge", "market", "garden", "road", "window", "library", "station", "harbour",
    "kitchen", "festival", "museum", "school", "field", "valley", "forest", "hill", "island", "lake", "farm",
    "workshop", "street", "square", "church", "mill", "tower", "castle", "path", "coast", "beach", "meadow",
    "orchard", "vineyard", "factory", "office", "bakery", "theatre", "park", "plan", "project", "journey",
    "story", "season", "tradition", "method", "recipe", "design", "idea", "question", "answer", "problem",
    "result", "decision", "report", "map", "letter", "record", "collection", "exhibition", "lesson",
    "conversation", "event", "meeting", "experiment", "schedule", "budget", "survey", "notebook", "table",
    "chair", "door", "wall", "roof", "garage", "shed", "fence", "gate", "lamp", "clock", "box", "basket",
    "bottle", "jar", "shelf", "cupboard", "staircase", "corridor", "courtyard", "balcony", "cellar", "attic",
    "neighbourhood", "community", "committee", "council", "family", "team", "group", "crowd", "audience",
    "visitor", "student", "teacher", "farmer", "builder", "driver", "painter", "writer", "reader", "child",
    "weekend", "morning", "evening", "afternoon", "summer", "winter", "spring", "autumn", "holiday", "week",
)

ADJECTIVES = (
    "old", "new", "small", "large", "quiet", "busy", "narrow", "wide", "bright", "dark", "warm", "cold", "early",
    "late", "local", "famous", "hidden", "simple", "careful", "patient", "modern", "ancient", "wooden", "stone",
    "green", "golden", "grey", "blue", "red", "white", "long", "short", "steep", "gentle", "strange",
    "familiar", "rare", "common", "remarkable", "unusual", "useful", "heavy", "light", "open", "crowded",
    "empty", "distant", "nearby", "northern", "southern", "eastern", "western", "seasonal", "annual", "weekly",
    "traditional", "detailed", "rough", "smooth", "fresh", "dry", "sunny", "windy", "clear", "steady",
    "fragile", "sturdy", "elegant", "humble", "generous", "curious", "tidy", "crooked", "faded", "polished",
    "handmade", "borrowed", "forgotten", "favourite", "peaceful", "noisy", "shallow", "deep", "tall", "low",
    "broad", "tiny", "massive", "ordinary", "special", "second", "third", "final", "original", "recent",
    "cheerful", "serious", "lively", "sleepy", "silver", "copper", "brick", "glass", "paper", "cotton",
)

# (base form, past tense) of transitive verbs; the patterns only use the past tense or a modal,
# so no subject-verb agreement is needed.
TRANSITIVE_VERBS = (
    ("visit", "visited"), ("build", "built"), ("repair", "repaired"), ("study", "studied"),
    ("describe", "described"), ("measure", "measured"), ("paint", "painted"), ("follow", "followed"),
    ("explore", "explored"), ("clean", "cleaned"), ("open", "opened"), ("close", "closed"),
    ("carry", "carried"), ("move", "moved"), ("find", "found"), ("share", "shared"), ("prepare", "prepared"),
    ("collect", "collected"), ("record", "recorded"), ("check", "checked"), ("watch", "watched"),
    ("plan", "planned"), ("restore", "restored"), ("improve", "improved"), ("test", "tested"),
    ("design", "designed"), ("compare", "compared"), ("discover", "discovered"), ("protect", "protected"),
    ("replace", "replaced"), ("support", "supported"), ("organise", "organised"), ("examine", "examined"),
    ("mark", "marked"), ("reach", "reached"), ("leave", "left"), ("bring", "brought"), ("keep", "kept"),
    ("show", "showed"), ("draw", "drew"), ("choose", "chose"), ("cross", "crossed"), ("climb", "climbed"),
    ("fix", "fixed"), ("plant", "planted"), ("sketch", "sketched"), ("map", "mapped"), ("label", "labelled"),
    ("sort", "sorted"), ("store", "stored"), ("wash", "washed"), ("lift", "lifted"), ("pull", "pulled"),
    ("push", "pushed"), ("paint over", "painted over"), ("photograph", "photographed"), ("count", "counted"),
    ("rebuild", "rebuilt"), ("inspect", "inspected"), ("decorate", "decorated"), ("borrow", "borrowed"),
    ("lend", "lent"), ("deliver", "delivered"), ("finish", "finished"), ("start", "started"),
    ("notice", "noticed"), ("remember", "remembered"), ("describe in detail", "described in detail"),
    ("welcome", "welcomed"), ("guide", "guided"), ("paint again", "painted again"), ("greet", "greeted"),
)

INTRANSITIVE_VERBS = (
    ("walk", "walked"), ("wait", "waited"), ("work", "worked"), ("arrive", "arrived"), ("stay", "stayed"),
    ("gather", "gathered"), ("travel", "travelled"), ("rest", "rested"), ("listen", "listened"),
    ("return", "returned"), ("settle", "settled"), ("wander", "wandered"), ("pause", "paused"),
    ("meet", "met"), ("sing", "sang"), ("laugh", "laughed"), ("cycle", "cycled"), ("sail", "sailed"),
    ("climb", "climbed"), ("camp", "camped"), ("cook", "cooked"), ("talk", "talked"), ("read", "read"),
)

ADVERBS = (
    "slowly", "carefully", "quietly", "quickly", "finally", "eventually", "recently", "suddenly", "gradually",
    "patiently", "happily", "briefly", "gently", "often", "rarely", "usually", "clearly", "simply", "mostly",
    "nearly", "almost", "partly", "properly", "calmly", "proudly", "openly", "regularly", "steadily",
)

TIME_PHRASES = (
    "in the spring", "last autumn", "during the winter", "early in the morning", "on a quiet Sunday",
    "after the storm", "before the festival", "by the end of the week", "in the late afternoon",
    "over the summer", "every few years", "for almost a decade", "at dawn", "in the evening", "in March",
    "in early June", "last October", "in the first week of May", "just before noon", "around midnight",
    "on the following day", "two years ago", "a few weeks later", "since the nineties", "during the holidays",
    "on most weekends", "after the harvest", "before the first frost", "through the long winter",
    "on a rainy Tuesday", "at the start of the season", "later that month", "in the same year",
)

PREPOSITIONS = ("in", "near", "behind", "beside", "across", "along", "above", "below", "around", "outside",
                "inside", "beyond", "opposite", "under", "past", "towards")

SUBORDINATORS = ("When", "After", "Before", "Although", "Because", "While", "Once", "Until", "Since", "As soon as",
                 "Even though", "Whenever")

CONNECTORS = (
    "However", "Meanwhile", "In fact", "Even so", "For that reason", "At first", "Later", "Today", "Still",
    "As a result", "Of course", "In the end", "Oddly enough", "By contrast", "Not surprisingly",
    "For most visitors", "According to the notes", "In those days", "Without much fuss", "To be fair",
    "On the whole", "Looking back", "By the way", "In any case", "Before long", "Sure enough",
)

MODALS = ("will", "could", "might", "should", "can", "would", "may", "must")

FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elena", "Frank", "Grace", "Henry", "Iris", "Jonas", "Kate", "Leo",
    "Maria", "Nick", "Olivia", "Peter", "Rosa", "Sam", "Tara", "Victor", "Wendy", "Adam", "Beth", "Colin",
    "Diane", "Ethan", "Fiona", "George", "Helen", "Ian", "Julia", "Karl", "Lucy", "Martin", "Nora", "Oscar",
    "Paula", "Ruth", "Simon", "Tom", "Ursula", "Vera", "William", "Amy", "Bruno", "Carla", "Daniel", "Emma",
)
SURNAMES = (
    "Archer", "Baker", "Carter", "Dawson", "Ellis", "Fletcher", "Gardner", "Hughes", "Irving", "Jensen",
    "Keller", "Lambert", "Mason", "Norris", "Owens", "Palmer", "Quinn", "Reyes", "Shaw", "Turner", "Underwood",
    "Vaughan", "Walsh", "Young", "Abbott", "Bishop", "Cole", "Doyle", "Everett", "Foster", "Grant", "Harper",
    "Ingram", "Jordan", "Knight", "Lowe", "Morgan", "Nash", "Oliver", "Porter", "Reed", "Stone", "Thorne",
)
ROLES = (
    "the owner", "a local teacher", "the head gardener", "an engineer", "the curator", "our editor",
    "a retired pilot", "the librarian", "a young student", "the mayor", "a neighbour", "the guide",
    "the caretaker", "a visiting scholar", "the chairwoman of the club", "an old fisherman", "the baker",
    "a volunteer", "the station master", "a carpenter", "the photographer", "one of the organisers",
)
REPORTING_VERBS = ("said", "explained", "told us", "recalled", "pointed out", "admitted", "noted", "added",
                   "insisted", "remarked", "wrote", "suggested")

PLACE_HEADS = ("Ash", "Bram", "Cold", "Dun", "Elm", "Fen", "Glen", "Hart", "Kings", "Lark", "Mill", "North",
               "Oak", "Pen", "Red", "Stan", "Thorn", "West", "Wick", "Yar", "Brook", "Cliff", "Hollow", "Bell",
               "Marl", "Salt", "Wren", "Holly", "Fox", "Ravens")
PLACE_TAILS = ("ford", "bury", "wick", "ton", "field", "mouth", "leigh", "stead", "moor", "dale", "haven",
               "bridge", "combe", "worth", "by", "thorpe", "hurst", "well")


@dataclass(frozen=True)
class Topic:
    """A subject a page is about: its own nouns join the general ones."""

    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...] = ()


TOPICS = (
    Topic("astronomy", ("telescope", "comet", "planet", "moon", "star chart", "eclipse", "orbit", "observatory",
                        "lens", "galaxy", "meteor", "nebula", "crater", "satellite", "night sky", "dome"),
          ("faint", "distant", "starry", "lunar")),
    Topic("coffee", ("bean", "roaster", "espresso", "grinder", "cup", "brew", "kettle", "cafe", "harvest",
                     "aroma", "filter", "barista", "plantation", "saucer", "counter", "blend"),
          ("roasted", "bitter", "aromatic", "strong")),
    Topic("cats", ("kitten", "whisker", "paw", "blanket", "basket", "collar", "cushion", "windowsill",
                   "scratching post", "tail", "garden wall", "food bowl", "nap", "cat flap"),
          ("furry", "playful", "sleepy", "striped")),
    Topic("rockets", ("rocket", "launch pad", "engine", "capsule", "crew", "fuel tank", "countdown", "mission",
                      "nozzle", "booster", "control room", "flight plan", "payload", "launch tower"),
          ("orbital", "powerful", "reusable", "fiery")),
    Topic("gardening", ("seedling", "soil", "compost", "greenhouse", "tomato", "hedge", "pond", "rose",
                        "shovel", "watering can", "flower bed", "vegetable patch", "trellis", "wheelbarrow"),
          ("leafy", "fertile", "blooming", "muddy")),
    Topic("sailing", ("boat", "sail", "tide", "mast", "rope", "lighthouse", "anchor", "deck", "current",
                      "pier", "dinghy", "compass", "buoy", "marina"),
          ("salty", "breezy", "calm", "coastal")),
    Topic("cycling", ("bicycle", "saddle", "chain", "climb", "trail", "helmet", "wheel", "tyre", "route",
                      "motorcycle", "handlebar", "gear", "pump", "cycle lane"),
          ("uphill", "fast", "muddy", "scenic")),
    Topic("baking", ("loaf", "dough", "oven", "flour", "crust", "pastry", "yeast", "baking tray", "rolling pin",
                     "sourdough", "biscuit", "apron", "mixing bowl", "cake"),
          ("crusty", "golden", "sweet", "flaky")),
    Topic("railways", ("locomotive", "platform", "carriage", "timetable", "signal", "track", "tunnel",
                       "viaduct", "ticket office", "level crossing", "guard", "steam engine", "branch line"),
          ("rusty", "punctual", "narrow gauge", "restored")),
    Topic("birds", ("heron", "sparrow", "nest", "feather", "wetland", "owl", "swallow", "migration", "reed bed",
                    "bird table", "kingfisher", "robin", "flock", "binoculars"),
          ("feathered", "migrating", "shy", "noisy")),
    Topic("architecture", ("facade", "arch", "column", "staircase", "brick wall", "beam", "window frame",
                           "chimney", "gable", "porch", "town hall", "cornice", "tile", "courtyard"),
          ("gothic", "restored", "symmetrical", "weathered")),
    Topic("geology", ("rock", "fossil", "cliff", "layer", "glacier", "mineral", "quarry", "sandstone",
                      "pebble", "gravel", "boulder", "limestone", "cave", "outcrop"),
          ("layered", "volcanic", "eroded", "sandy")),
    Topic("music", ("choir", "violin", "concert", "rehearsal", "melody", "drum", "piano", "orchestra", "score",
                    "conductor", "cello", "brass band", "tune", "stage"),
          ("musical", "loud", "harmonic", "rehearsed")),
    Topic("photography", ("camera", "shutter", "exposure", "tripod", "print", "darkroom", "film roll",
                          "viewfinder", "portrait", "negative", "flash", "light meter", "lens cap"),
          ("sharp", "blurry", "overexposed", "grainy")),
    Topic("microscopy", ("microscope", "sample", "cell", "slide", "tissue", "laboratory", "stain", "specimen",
                         "cover slip", "petri dish", "nucleus", "pipette", "culture", "lab bench"),
          ("microscopic", "stained", "magnified", "sterile")),
    Topic("history", ("archive", "manuscript", "chronicle", "ruin", "coin", "artefact", "parish register",
                      "charter", "seal", "old map", "family tree", "ledger", "medal", "postcard"),
          ("medieval", "historic", "Victorian", "dusty")),
    Topic("hiking", ("trail", "summit", "ridge", "boot", "backpack", "campsite", "stream", "footpath",
                     "stile", "signpost", "water bottle", "viewpoint", "moorland", "shelter"),
          ("rocky", "muddy", "windswept", "winding")),
    Topic("clocks", ("clock", "pendulum", "dial", "gear wheel", "spring", "watchmaker", "clock tower", "hand",
                     "chime", "escapement", "bell", "mainspring", "face", "cabinet"),
          ("ticking", "brass", "antique", "precise")),
    Topic("weather", ("storm", "cloud", "rainfall", "forecast", "wind", "frost", "fog", "rain gauge",
                      "thermometer", "hailstone", "rainbow", "drizzle", "heatwave", "snowfall"),
          ("stormy", "misty", "humid", "freezing")),
    Topic("textiles", ("loom", "thread", "wool", "pattern", "dye", "quilt", "needle", "spindle", "fabric",
                       "sewing machine", "button tin", "tapestry", "scarf", "yarn"),
          ("woven", "knitted", "dyed", "patterned")),
)

IRREGULAR_PLURALS = {"child": "children", "person": "people", "shelf": "shelves", "leaf": "leaves",
                     "loaf": "loaves", "scarf": "scarves", "knife": "knives", "mouse": "mice", "foot": "feet"}
UNCOUNTABLE = {"soil", "compost", "flour", "yeast", "dough", "wool", "fabric", "gravel", "rainfall", "fog",
               "frost", "drizzle", "thread", "yarn", "sourdough", "limestone", "sandstone", "moorland"}


def plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        word = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "ch", "sh", "z")):
        word = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def article(word: str) -> str:
    if word.split()[-1] in UNCOUNTABLE:
        return "some"
    return "an" if word[:1].lower() in "aeiou" and not word.lower().startswith(("uni", "use", "eu")) else "a"


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


class EnglishWriter:
    """Sentences, paragraphs and titles about one topic, varied by a seeded `random.Random`."""

    lang = "en"

    def __init__(self, rng: random.Random, topic: Topic):
        self.rng = rng
        self.topic = topic
        self.place = self.place_name()
        self.person = self.person_name()

    # -- building blocks ------------------------------------------------------------------
    def pick(self, options):
        return self.rng.choice(options)

    def noun(self) -> str:
        if self.rng.random() < 0.55:
            return self.pick(self.topic.nouns)
        return self.pick(GENERAL_NOUNS)

    def adjective(self) -> str:
        if self.topic.adjectives and self.rng.random() < 0.25:
            return self.pick(self.topic.adjectives)
        return self.pick(ADJECTIVES)

    @staticmethod
    def a(phrase: str) -> str:
        """'A'/'An'/'Some' + phrase, capitalised (a title's first word)."""
        return capitalize(f"{article(phrase)} {phrase}")

    def place_name(self) -> str:
        return self.pick(PLACE_HEADS) + self.pick(PLACE_TAILS)

    def person_name(self) -> str:
        return f"{self.pick(FIRST_NAMES)} {self.pick(SURNAMES)}"

    def speaker(self) -> str:
        roll = self.rng.random()
        if roll < 0.4:
            return self.person_name()
        if roll < 0.55:
            return self.person
        return self.pick(ROLES)

    def noun_phrase(self, allow_of: bool = True) -> str:
        return self.counted_noun_phrase(allow_of)[0]

    def counted_noun_phrase(self, allow_of: bool = True) -> tuple[str, bool]:
        """A determiner phrase and whether it is plural (for 'was'/'were')."""
        noun = self.noun()
        adjective = self.adjective() if self.rng.random() < 0.55 else ""
        core = f"{adjective} {noun}" if adjective else noun
        roll = self.rng.random()
        is_plural = False
        if noun in UNCOUNTABLE:
            det = self.pick(("the", "some", "the", "our", "their", "this", "that", "much of the"))
        elif roll < 0.3:
            det = self.pick(("the", "this", "that", "our", "their", "its", "every", "one", "each", "the"))
        elif roll < 0.5:
            det = article(core)
        else:
            det = self.pick(("the", "some", "many", "several", "these", "those", "a few", "our", "their",
                             "two", "three", "most of the", "all the"))
            core = f"{adjective} {plural(noun)}" if adjective else plural(noun)
            is_plural = True
        phrase = f"{det} {core}"
        if allow_of and self.rng.random() < 0.2:
            phrase += f" of {self.noun_phrase(allow_of=False)}"
        return phrase, is_plural

    def place_phrase(self) -> str:
        roll = self.rng.random()
        if roll < 0.25:
            return f"{self.pick(('in', 'near', 'outside', 'around', 'north of', 'south of'))} {self.place}"
        if roll < 0.35:
            return f"between {self.noun_phrase(False)} and {self.noun_phrase(False)}"
        return f"{self.pick(PREPOSITIONS)} {self.noun_phrase(False)}"

    def extra(self) -> str:
        """An optional trailing phrase that lengthens a clause."""
        roll = self.rng.random()
        if roll < 0.3:
            return " " + self.place_phrase()
        if roll < 0.55:
            return " " + self.pick(TIME_PHRASES)
        if roll < 0.65:
            return f" {self.place_phrase()} {self.pick(TIME_PHRASES)}"
        return ""

    def clause(self) -> str:
        """A complete past-tense clause without final punctuation."""
        roll = self.rng.random()
        if roll < 0.45:
            verb = self.pick(TRANSITIVE_VERBS)[1]
            return f"{self.noun_phrase()} {verb} {self.noun_phrase()}{self.extra()}"
        if roll < 0.65:
            verb = self.pick(INTRANSITIVE_VERBS)[1]
            return f"{self.noun_phrase()} {verb} {self.pick(ADVERBS)}{self.extra()}"
        if roll < 0.8:
            verb = self.pick(TRANSITIVE_VERBS)[0]
            modal = self.pick(MODALS)
            return f"{self.noun_phrase()} {modal} {self.pick(ADVERBS)} {verb} {self.noun_phrase()}"
        if roll < 0.9:
            subject, is_plural = self.counted_noun_phrase()
            be = self.pick(("were" if is_plural else "was", "seemed", "looked", "felt", "remained", "became"))
            degree = self.pick(("quite", "rather", "very", "surprisingly", "almost", "still"))
            return f"{subject} {be} {degree} {self.adjective()}"
        verb = self.pick(TRANSITIVE_VERBS)[1]
        return f"{self.speaker()} {verb} {self.noun_phrase()}{self.extra()}"

    # -- sentences ---------------------------------------------------------------------------
    def sentence(self) -> str:
        roll = self.rng.random()
        if roll < 0.22:
            text = self.clause()
        elif roll < 0.36:
            text = f"{self.pick(CONNECTORS)}, {self.clause()}"
        elif roll < 0.48:
            text = f"{self.pick(SUBORDINATORS)} {self.clause()}, {self.clause()}"
        elif roll < 0.58:
            text = f"{self.clause()}, {self.pick(('and', 'but', 'so', 'yet', 'while'))} {self.clause()}"
        elif roll < 0.66:
            who = self.speaker()
            text = f"{who} {self.pick(REPORTING_VERBS)} that {self.clause()}"
        elif roll < 0.72:
            quoted = capitalize(self.clause())
            return f"\u201c{quoted},\u201d {self.pick(REPORTING_VERBS)} {self.speaker()}."
        elif roll < 0.78:
            be = self.pick(("is", "was"))
            noun = self.noun()
            verb = self.pick(TRANSITIVE_VERBS)[1]
            text = f"there {be} {article(noun)} {noun} {self.place_phrase()} which {verb} {self.noun_phrase()}"
        elif roll < 0.84:
            verb = self.pick(TRANSITIVE_VERBS)[0]
            text = (f"why did {self.noun_phrase()} {verb} {self.noun_phrase()}"
                    f"{self.extra()}")
            return capitalize(text) + "?"
        elif roll < 0.9:
            text = f"{self.pick(TIME_PHRASES)}, {self.clause()}"
        elif roll < 0.95:
            text = f"{self.clause()} because {self.clause()}"
        else:
            text = f"{self.clause()}; {self.clause()}"
        return capitalize(text) + "."

    def paragraph(self, sentences: tuple[int, int] = (3, 6)) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(*sentences)))

    def lead(self) -> str:
        """An opening sentence dense in function words: a page's first words read as plain English."""
        np1, np2 = self.noun_phrase(False), self.noun_phrase(False)
        patterns = (
            f"This is the story of {np1} and of the people who have looked after it for so long.",
            f"It was {self.pick(TIME_PHRASES)} when we first went to see {np1} {self.place_phrase()}.",
            f"We have written about {np1} before, but there is still a lot more to say about {np2}.",
            f"There are not many places where you can see {np1} as well as you can {self.place_phrase()}.",
            f"Here is what we found when we went back to {np1} {self.pick(TIME_PHRASES)}.",
            f"It is hard to say why {np1} means so much to the people who live {self.place_phrase()}.",
            f"Most of the people we asked about {np1} had a story of their own to tell us.",
            f"All of this began with {np1}, and it is not over yet.",
            f"You may not have heard of {np1}, but it is well worth a visit if you are ever {self.place_phrase()}.",
        )
        return self.pick(patterns)

    def opening(self, sentences: tuple[int, int] = (3, 5)) -> str:
        """The first paragraph of an article: a lead sentence, then ordinary prose."""
        return self.lead() + " " + self.paragraph(sentences)

    def title(self) -> str:
        noun, other = self.noun(), self.noun()
        while other == noun:
            other = self.noun()
        patterns = (
            f"The {self.adjective()} {noun} of {self.place}",
            f"Notes on {plural(noun)} and {plural(other)}",
            f"What we learned about the {noun}",
            f"{self.a(self.adjective() + ' ' + noun)} near {self.place}",
            f"How the {noun} {self.pick(TRANSITIVE_VERBS)[1]} the {other}",
            f"{capitalize(self.pick(TIME_PHRASES))} at the {noun}",
            f"{capitalize(plural(noun))}, {plural(other)} and {self.a(self.adjective() + ' ' + self.noun()).lower()}",
            f"In praise of the {self.adjective()} {noun}",
        )
        return capitalize(self.pick(patterns))

    def heading(self) -> str:
        noun = self.noun()
        patterns = (
            f"The {noun}", f"About the {self.adjective()} {noun}", f"{capitalize(plural(noun))} {self.place_phrase()}",
            f"Back {self.pick(PREPOSITIONS)} the {noun}", self.a(f"{self.adjective()} {self.pick(GENERAL_NOUNS)}"),
            f"What happened {self.pick(TIME_PHRASES)}",
        )
        return capitalize(self.pick(patterns))

    def caption(self) -> str:
        noun = self.noun()
        patterns = (
            f"The {self.adjective()} {noun} {self.place_phrase()}",
            f"{capitalize(article(noun))} {noun} {self.pick(TIME_PHRASES)}",
            f"{capitalize(self.noun_phrase(False))} {self.place_phrase()}, photographed by {self.person_name()}",
            f"View of the {noun} {self.place_phrase()}",
        )
        return capitalize(self.pick(patterns)) + "."

    def alt_text(self) -> str:
        return f"{capitalize(self.noun_phrase(False))} {self.place_phrase()}"


# --------------------------------------------------------------------------------------------
# German, French, Spanish: smaller grammars, enough for fluent-looking paragraphs
# --------------------------------------------------------------------------------------------

class _ForeignWriter:
    """Template prose in another language: each pattern is a tuple of fixed parts and slot names."""

    lang = ""
    slots: dict[str, tuple[str, ...]] = {}
    patterns: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()

    def __init__(self, rng: random.Random, topic: Topic | None = None):
        self.rng = rng

    def _fill(self, pattern: str) -> str:
        out = pattern
        while "{" in out:
            start = out.index("{")
            end = out.index("}", start)
            out = out[:start] + self.rng.choice(self.slots[out[start + 1:end]]) + out[end + 1:]
        return out

    def sentence(self) -> str:
        return capitalize(self._fill(self.rng.choice(self.patterns)))

    def paragraph(self, sentences: tuple[int, int] = (3, 6)) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(*sentences)))

    opening = paragraph

    def title(self) -> str:
        return capitalize(self._fill(self.rng.choice(self.titles)))

    heading = title

    def caption(self) -> str:
        return self.sentence()

    def alt_text(self) -> str:
        return self.title()


class GermanWriter(_ForeignWriter):
    lang = "de"
    slots = {
        "det_pl": ("die", "diese", "viele", "einige", "unsere", "alle", "manche", "zwei", "drei"),
        "adj_pl": ("alten", "neuen", "kleinen", "großen", "stillen", "hellen", "dunklen", "schönen", "langen",
                   "engen", "breiten", "bunten", "ruhigen", "warmen", "kalten", "frischen", "hölzernen"),
        "noun_pl": ("Häuser", "Brücken", "Gärten", "Straßen", "Fenster", "Bäume", "Wege", "Kinder", "Bauern",
                    "Nachbarn", "Besucher", "Mühlen", "Boote", "Felder", "Wiesen", "Märkte", "Bücher", "Lehrer",
                    "Fotografen", "Türme", "Kirchen", "Hügel", "Schiffe", "Züge", "Vögel", "Blumen", "Katzen"),
        "verb_pl": ("stehen", "liegen", "warten", "arbeiten", "wohnen", "bleiben", "wachsen", "glänzen",
                    "verschwinden", "erscheinen", "leuchten", "schweigen"),
        "verb_pl_trans": ("bauen", "sehen", "finden", "besuchen", "reparieren", "malen", "zeigen", "tragen",
                          "suchen", "pflegen", "beobachten", "sammeln", "fotografieren", "öffnen"),
        "place": ("am Fluss", "im Dorf", "hinter dem Bahnhof", "neben der Kirche", "auf dem Markt",
                  "unter der Brücke", "in der Altstadt", "am Waldrand", "auf dem Hügel", "im Hafen",
                  "vor dem Rathaus", "in den Bergen", "an der Küste", "im Garten", "auf dem Feld"),
        "time": ("im Frühling", "im Herbst", "am Morgen", "am Abend", "jeden Sonntag", "seit vielen Jahren",
                 "nach dem Regen", "vor dem Winter", "im letzten Sommer", "in der Nacht", "um Mitternacht",
                 "am Wochenende", "zu jeder Jahreszeit", "kurz vor Mittag"),
        "adv": ("langsam", "leise", "gern", "oft", "selten", "immer", "wieder", "ganz", "fast", "endlich",
                "plötzlich", "vorsichtig", "geduldig", "schon", "noch"),
        "conn": ("Deshalb", "Trotzdem", "Außerdem", "Danach", "Heute", "Früher", "Natürlich", "Zum Glück",
                 "Leider", "Später"),
        "name": ("Anna", "Jonas", "Greta", "Lukas", "Marie", "Felix", "Paula", "Stefan", "Helga", "Moritz"),
    }
    patterns = (
        "{det_pl} {adj_pl} {noun_pl} {verb_pl} {time} {place}.",
        "{time} {verb_pl_trans} wir die {adj_pl} {noun_pl} {place}.",
        "{conn} {verb_pl} die {noun_pl} {adv} {place}, und niemand weiß genau, warum.",
        "{name} sagt, dass die {adj_pl} {noun_pl} {time} {adv} {verb_pl}.",
        "Wir haben {det_pl} {adj_pl} {noun_pl} {place} gesehen, aber die {noun_pl} waren nicht mehr da.",
        "Es gibt {place} noch immer {adj_pl} {noun_pl}, die {time} {verb_pl}.",
        "{conn} haben die {noun_pl} {det_pl} {noun_pl} {place} {adv} besucht.",
        "Wenn die {noun_pl} {place} {verb_pl}, {verb_pl_trans} die {noun_pl} sie {time}.",
        "Die Geschichte der {noun_pl} {place} ist lang, und sie wird {time} {adv} erzählt.",
        "{name} und {name} {verb_pl_trans} {time} die {adj_pl} {noun_pl} {place}.",
        "Warum {verb_pl} die {adj_pl} {noun_pl} {adv} {place}?",
        "Man kann die {noun_pl} {place} {adv} sehen, wenn das Wetter gut ist.",
    )
    titles = (
        "Die {adj_pl} {noun_pl} {place}", "{time}: {noun_pl} {place}", "Über die {noun_pl} und die {noun_pl}",
        "Was die {noun_pl} {place} erzählen",
    )


class FrenchWriter(_ForeignWriter):
    lang = "fr"
    slots = {
        "det_pl": ("les", "ces", "nos", "leurs", "plusieurs", "quelques", "tous les", "deux", "trois"),
        "noun_pl": ("maisons", "ponts", "jardins", "rues", "fenêtres", "arbres", "chemins", "enfants",
                    "paysans", "voisins", "visiteurs", "moulins", "bateaux", "champs", "marchés", "livres",
                    "professeurs", "tours", "églises", "collines", "navires", "trains", "oiseaux", "fleurs"),
        "adj_pl": ("anciens", "nouveaux", "petits", "grands", "tranquilles", "lumineux", "sombres", "beaux",
                   "longs", "étroits", "larges", "colorés", "calmes", "chauds", "froids", "frais"),
        "verb_pl": ("attendent", "travaillent", "restent", "brillent", "disparaissent", "apparaissent",
                    "dorment", "changent", "grandissent", "chantent", "reviennent", "se reposent"),
        "verb_pl_trans": ("construisent", "regardent", "trouvent", "visitent", "réparent", "peignent",
                          "montrent", "portent", "cherchent", "protègent", "observent", "rassemblent"),
        "place": ("près de la rivière", "dans le village", "derrière la gare", "à côté de l'église",
                  "sur la place du marché", "sous le pont", "dans la vieille ville", "au bord de la forêt",
                  "sur la colline", "dans le port", "devant la mairie", "dans les montagnes", "sur la côte",
                  "au fond du jardin"),
        "time": ("au printemps", "en automne", "le matin", "le soir", "chaque dimanche", "depuis des années",
                 "après la pluie", "avant l'hiver", "l'été dernier", "pendant la nuit", "à minuit",
                 "le week-end", "en toute saison", "juste avant midi"),
        "adv": ("lentement", "doucement", "souvent", "rarement", "toujours", "encore", "presque", "enfin",
                "soudain", "prudemment", "patiemment", "déjà", "volontiers"),
        "conn": ("Pourtant", "Ensuite", "Aujourd'hui", "Autrefois", "Bien sûr", "Heureusement",
                 "Malheureusement", "Un peu après", "Par ailleurs", "En effet"),
        "name": ("Camille", "Julien", "Margaux", "Antoine", "Chloé", "Mathieu", "Élise", "Nicolas", "Sophie"),
        "verb_we": ("construisons", "regardons", "trouvons", "visitons", "réparons", "cherchons", "observons",
                    "protégeons"),
    }
    patterns = (
        "{det_pl} {noun_pl} {adj_pl} {verb_pl} {time} {place}.",
        "{time}, nous {verb_we} les {noun_pl} {adj_pl} {place}.",
        "{conn}, les {noun_pl} {verb_pl} {adv} {place}, et personne ne sait vraiment pourquoi.",
        "{name} dit que les {noun_pl} {adj_pl} {verb_pl} {adv} {time}.",
        "Nous avons vu {det_pl} {noun_pl} {place}, mais les {noun_pl} n'étaient plus là.",
        "Il y a encore {place} des {noun_pl} qui {verb_pl} {time}.",
        "{conn}, les {noun_pl} {verb_pl_trans} {det_pl} {noun_pl} {place}.",
        "Quand les {noun_pl} {verb_pl} {place}, les {noun_pl} les {verb_pl_trans} {time}.",
        "L'histoire des {noun_pl} {place} est longue, et on la raconte {adv} {time}.",
        "{name} et {name} {verb_pl_trans} {time} les {noun_pl} {adj_pl} {place}.",
        "Pourquoi les {noun_pl} {adj_pl} {verb_pl}-ils {adv} {place} ?",
        "On peut voir les {noun_pl} {place} quand il fait beau, surtout {time}.",
    )
    titles = (
        "Les {noun_pl} {adj_pl} {place}", "{time} : des {noun_pl} {place}", "À propos des {noun_pl} et des {noun_pl}",
        "Ce que racontent les {noun_pl} {place}",
    )


class SpanishWriter(_ForeignWriter):
    lang = "es"
    slots = {
        "det_pl": ("las", "estas", "muchas", "algunas", "nuestras", "todas las", "dos", "tres", "varias"),
        "noun_pl": ("casas", "calles", "ventanas", "montañas", "playas", "plazas", "iglesias", "torres",
                    "escuelas", "barcas", "flores", "familias", "ciudades", "fuentes", "colinas", "granjas",
                    "tiendas", "huertas", "cartas", "fotografías", "estaciones", "carreteras"),
        "adj_pl": ("antiguas", "nuevas", "pequeñas", "grandes", "tranquilas", "luminosas", "oscuras", "bonitas",
                   "largas", "estrechas", "anchas", "coloridas", "cálidas", "frías", "frescas", "blancas"),
        "verb_pl": ("esperan", "trabajan", "descansan", "brillan", "desaparecen", "aparecen", "duermen",
                    "cambian", "crecen", "cantan", "vuelven", "permanecen"),
        "verb_pl_trans": ("construyen", "miran", "encuentran", "visitan", "reparan", "pintan", "muestran",
                          "llevan", "buscan", "protegen", "observan", "reúnen"),
        "place": ("junto al río", "en el pueblo", "detrás de la estación", "al lado de la iglesia",
                  "en la plaza del mercado", "bajo el puente", "en el casco antiguo", "al borde del bosque",
                  "sobre la colina", "en el puerto", "delante del ayuntamiento", "en las montañas",
                  "en la costa", "al fondo del jardín"),
        "time": ("en primavera", "en otoño", "por la mañana", "por la tarde", "cada domingo", "desde hace años",
                 "después de la lluvia", "antes del invierno", "el verano pasado", "durante la noche",
                 "a medianoche", "los fines de semana", "en cualquier estación", "justo antes del mediodía"),
        "adv": ("lentamente", "despacio", "a menudo", "casi nunca", "siempre", "otra vez", "casi", "por fin",
                "de repente", "con cuidado", "con paciencia", "ya", "todavía"),
        "conn": ("Sin embargo", "Después", "Hoy", "Antes", "Por supuesto", "Por suerte", "Por desgracia",
                 "Más tarde", "Además", "De hecho"),
        "name": ("Lucía", "Javier", "Carmen", "Diego", "Elena", "Pablo", "Marta", "Andrés", "Isabel"),
        "verb_we": ("construimos", "miramos", "encontramos", "visitamos", "reparamos", "buscamos",
                    "observamos", "protegemos"),
    }
    patterns = (
        "{det_pl} {noun_pl} {adj_pl} {verb_pl} {time} {place}.",
        "{time}, nosotros {verb_we} las {noun_pl} {adj_pl} {place}.",
        "{conn}, las {noun_pl} {verb_pl} {adv} {place}, y nadie sabe muy bien por qué.",
        "{name} dice que las {noun_pl} {adj_pl} {verb_pl} {adv} {time}.",
        "Hemos visto {det_pl} {noun_pl} {place}, pero las {noun_pl} ya no estaban allí.",
        "Todavía hay {place} unas {noun_pl} que {verb_pl} {time}.",
        "{conn}, las {noun_pl} {verb_pl_trans} {det_pl} {noun_pl} {place}.",
        "Cuando las {noun_pl} {verb_pl} {place}, las {noun_pl} las {verb_pl_trans} {time}.",
        "La historia de las {noun_pl} {place} es larga, y se cuenta {adv} {time}.",
        "{name} y {name} {verb_pl_trans} {time} las {noun_pl} {adj_pl} {place}.",
        "¿Por qué las {noun_pl} {adj_pl} {verb_pl} {adv} {place}?",
        "Se pueden ver las {noun_pl} {place} cuando hace buen tiempo, sobre todo {time}.",
    )
    titles = (
        "Las {noun_pl} {adj_pl} {place}", "{time}: {noun_pl} {place}", "Sobre las {noun_pl} y las {noun_pl}",
        "Lo que cuentan las {noun_pl} {place}",
    )


FOREIGN_WRITERS = {"de": GermanWriter, "fr": FrenchWriter, "es": SpanishWriter}

# --------------------------------------------------------------------------------------------
# Spam and flagged words
# --------------------------------------------------------------------------------------------

SPAM_PHRASES = (
    "buy now", "cheap", "best price", "click here", "limited offer", "free shipping", "order today",
    "100% guaranteed", "discount", "lowest price online", "buy now cheap", "special deal", "act fast",
    "top quality replica", "save big", "hot sale", "no prescription needed", "cheap pills", "casino bonus",
)
SPAM_PRODUCTS = ("watches", "handbags", "sunglasses", "sneakers", "pills", "phones", "jackets", "perfume")


def spam_text(rng: random.Random, words: int = 400) -> str:
    """Keyword-stuffed sales copy: the same few phrases over and over."""
    out: list[str] = []
    while len(" ".join(out).split()) < words:
        product = rng.choice(SPAM_PRODUCTS)
        phrase = rng.choice(SPAM_PHRASES)
        out.append(f"{phrase} {product} buy now cheap {product} {rng.choice(SPAM_PHRASES)}!!!")
    return " ".join(out)


def profanity_words() -> list[str]:
    """better_profanity's bundled word list (read at run time: those words are never committed here)."""
    from importlib import resources

    text = resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text(encoding="utf-8")
    words = sorted({w.strip().lower() for w in text.splitlines() if w.strip() and w.strip().isalpha()})
    return [w for w in words if 3 <= len(w) <= 10]


def profane_paragraph(writer: EnglishWriter, flagged: list[str], share: float = 0.08) -> str:
    """An ordinary paragraph with about `share` of its words replaced by flagged words."""
    words = writer.paragraph((4, 6)).split()
    rng = writer.rng
    n = max(2, int(len(words) * share))
    for position in rng.sample(range(1, len(words) - 1), n):
        words[position] = rng.choice(flagged)
    return " ".join(words)
