"""Topic vocabulary and article text generation for the simulated news app.

Every subcategory has its own content words, every category a few more, and all articles share
function words, general news words, headline verbs and names. The topical signal is deliberately
blurred the way real news text is:

- **shared vocabulary**: each subcategory also uses a fixed set of words borrowed from a sibling
  subcategory and from one of another category (a football piece talks about "serve" and "rally",
  a property piece about "inflation"), so no word list belongs to one topic alone;
- **paraphrased headlines**: follow-ups of a recent story reword its headline (synonymous verbs,
  some words swapped for the new article's own topic, another order), sometimes from another
  subcategory, and an edited headline is a rewording of the old one;
- **noise**: off-topic words, names, and the odd typo.

A text encoder therefore sees topical signal strongest at the subcategory level but far from
separable on a headline alone, which is what gives fine-tuning on the corpus something to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# category -> (category-level words, {subcategory: subcategory words})
# fmt: off
TOPICS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "sports": (
        ("match", "season", "coach", "fans", "victory", "defeat", "championship", "tournament",
         "athletes", "stadium", "trophy", "title", "squad", "rivals", "final", "league"),
        {
            "football": ("striker", "goalkeeper", "midfielder", "penalty", "offside", "header", "transfer",
                         "derby", "premier", "manager", "corner", "freekick", "defender", "winger", "pitch",
                         "kickoff", "relegation", "promotion", "referee", "equaliser", "clean", "sheet",
                         "dribble", "volley", "crossbar", "stoppage", "substitute", "hattrick", "captain"),
            "tennis": ("serve", "volley", "racket", "baseline", "backhand", "forehand", "deuce", "tiebreak",
                       "grand", "slam", "wimbledon", "clay", "grass", "court", "ace", "break", "point",
                       "umpire", "doubles", "singles", "seed", "qualifier", "rally", "net", "lob", "drop",
                       "shot", "ranking"),
            "basketball": ("dunk", "rebound", "point", "guard", "forward", "center", "assist", "playoffs",
                           "conference", "draft", "rookie", "buzzer", "beater", "layup", "jumper", "three",
                           "pointer", "timeout", "overtime", "franchise", "roster", "hoop", "backboard",
                           "dribbling", "freethrow", "triple", "double", "courtside"),
            "cricket": ("batsman", "bowler", "wicket", "innings", "over", "spinner", "pace", "boundary",
                        "six", "test", "series", "umpire", "pitch", "stumps", "crease", "century", "duck",
                        "fielder", "slip", "yorker", "bouncer", "declaration", "follow", "ashes", "oneday",
                        "twenty", "captaincy", "allrounder"),
            "motorsport": ("grand", "prix", "driver", "qualifying", "pole", "position", "lap", "pit", "stop",
                           "tyres", "constructor", "podium", "circuit", "chicane", "overtake", "engine",
                           "aerodynamics", "safety", "car", "paddock", "fastest", "grid", "rally", "stewards",
                           "penalty", "chassis", "downforce", "strategy"),
        },
    ),
    "politics": (
        ("government", "minister", "party", "policy", "opposition", "leader", "vote", "campaign",
         "lawmakers", "cabinet", "coalition", "senator", "spokesperson", "reform"),
        {
            "elections": ("ballot", "polling", "voters", "turnout", "candidate", "constituency", "primary",
                          "runoff", "swing", "landslide", "incumbent", "challenger", "debate", "manifesto",
                          "canvassing", "poll", "exit", "recount", "electoral", "seats", "majority",
                          "margin", "precinct", "endorsement", "registration", "absentee", "mailin"),
            "legislation": ("bill", "amendment", "parliament", "committee", "chamber", "filibuster", "veto",
                            "statute", "clause", "reading", "lobbying", "ratify", "repeal", "enact",
                            "provision", "hearing", "session", "quorum", "speaker", "whip", "motion",
                            "legislature", "regulation", "loophole", "draft", "consultation", "signed"),
            "diplomacy": ("ambassador", "embassy", "summit", "treaty", "sanctions", "envoy", "negotiations",
                          "bilateral", "alliance", "foreign", "ministry", "consulate", "talks", "accord",
                          "delegation", "sovereignty", "ceasefire", "mediation", "communique", "visit",
                          "relations", "tensions", "agreement", "tariffs", "partners", "multilateral",
                          "diplomats"),
        },
    ),
    "business": (
        ("company", "investors", "profit", "revenue", "growth", "shares", "billion", "executives",
         "quarter", "industry", "sales", "firm", "customers", "deal"),
        {
            "markets": ("stocks", "bonds", "index", "rally", "selloff", "traders", "futures", "yields",
                        "volatility", "nasdaq", "dow", "currency", "dollar", "euro", "commodities", "gold",
                        "oil", "brent", "equities", "portfolio", "dividend", "bearish", "bullish", "hedge",
                        "fund", "exchange", "benchmark", "gains"),
            "companies": ("merger", "acquisition", "ceo", "board", "earnings", "layoffs", "startup",
                          "valuation", "ipo", "shareholders", "restructuring", "brand", "supplier",
                          "factory", "subsidiary", "takeover", "bid", "boardroom", "chairman", "founder",
                          "venture", "capital", "antitrust", "lawsuit", "product", "launch", "guidance"),
            "economy": ("inflation", "interest", "rates", "central", "bank", "gdp", "recession",
                        "unemployment", "wages", "consumer", "prices", "fiscal", "budget", "deficit",
                        "debt", "stimulus", "monetary", "tightening", "forecast", "productivity", "exports",
                        "imports", "trade", "manufacturing", "spending", "households", "economists"),
            "property": ("housing", "mortgage", "homeowners", "rent", "tenants", "landlords", "property",
                         "prices", "buyers", "sellers", "estate", "agents", "construction", "developers",
                         "apartments", "suburbs", "listings", "affordability", "deposit", "valuations",
                         "planning", "permission", "commercial", "office", "vacancy", "lease", "renovation"),
        },
    ),
    "technology": (
        ("tech", "digital", "software", "users", "platform", "online", "device", "data", "internet",
         "app", "innovation", "engineers", "silicon", "computing"),
        {
            "ai": ("artificial", "intelligence", "machine", "learning", "neural", "network", "chatbot",
                   "model", "training", "algorithm", "dataset", "robotics", "automation", "language",
                   "generative", "inference", "gpu", "transformer", "benchmark", "alignment", "agents",
                   "prompt", "researchers", "deep", "vision", "reasoning", "parameters"),
            "gadgets": ("smartphone", "tablet", "laptop", "headphones", "smartwatch", "camera", "battery",
                        "screen", "display", "charger", "wireless", "bluetooth", "processor", "chip",
                        "keyboard", "speaker", "wearable", "unboxing", "review", "specs", "foldable",
                        "earbuds", "pixel", "storage", "gigabytes", "accessory", "firmware"),
            "cybersecurity": ("hackers", "breach", "ransomware", "malware", "phishing", "vulnerability",
                              "patch", "encryption", "password", "attack", "firewall", "exploit", "leak",
                              "credentials", "botnet", "spyware", "zero", "day", "authentication", "threat",
                              "intrusion", "compromised", "cybercriminals", "security", "incident",
                              "response", "forensics"),
            "gaming": ("console", "video", "game", "gamers", "multiplayer", "esports", "studio", "sequel",
                       "franchise", "controller", "graphics", "open", "world", "quest", "level", "boss",
                       "players", "streaming", "tournament", "indie", "release", "trailer", "expansion",
                       "patch", "leaderboard", "virtual", "reality"),
        },
    ),
    "science": (
        ("scientists", "research", "study", "discovery", "university", "laboratory", "evidence",
         "experiment", "researchers", "journal", "findings", "theory"),
        {
            "space": ("nasa", "rocket", "launch", "orbit", "astronauts", "satellite", "mars", "moon",
                      "telescope", "galaxy", "planet", "asteroid", "comet", "spacecraft", "mission", "lunar",
                      "solar", "system", "cosmic", "nebula", "gravity", "probe", "exoplanet", "station",
                      "spacewalk", "booster", "capsule"),
            "climate": ("emissions", "carbon", "warming", "temperatures", "glaciers", "ice", "sheet",
                        "renewable", "solar", "wind", "fossil", "fuels", "drought", "heatwave", "sea",
                        "levels", "methane", "deforestation", "net", "zero", "pledge", "climate", "summit",
                        "adaptation", "biodiversity", "wildfires", "coral"),
            "biology": ("genes", "dna", "cells", "species", "evolution", "protein", "genome", "bacteria",
                        "virus", "enzyme", "organism", "fossil", "ecosystem", "mutation", "stem", "neurons",
                        "microbes", "habitat", "predator", "mammals", "insects", "sequencing", "tissue",
                        "molecular", "biologists", "primates", "extinct"),
        },
    ),
    "health": (
        ("health", "doctors", "patients", "hospital", "care", "risk", "treatment", "clinical",
         "symptoms", "wellbeing", "experts", "medical"),
        {
            "fitness": ("workout", "exercise", "gym", "running", "marathon", "strength", "training", "cardio",
                        "muscles", "stretching", "yoga", "pilates", "steps", "endurance", "routine",
                        "weights", "squats", "sprint", "cycling", "swimming", "recovery", "trainer",
                        "flexibility", "posture", "heart", "rate", "interval"),
            "nutrition": ("diet", "protein", "vitamins", "calories", "sugar", "fibre", "vegetables", "fruit",
                          "carbohydrates", "fasting", "supplements", "gut", "microbiome", "salt", "fats",
                          "portion", "meals", "snacks", "hydration", "cholesterol", "dietitian", "wholegrain",
                          "processed", "minerals", "iron", "calcium", "breakfast"),
            "medicine": ("vaccine", "drug", "trial", "surgery", "cancer", "diagnosis", "therapy", "dose",
                         "antibiotics", "infection", "outbreak", "pandemic", "disease", "chronic",
                         "diabetes", "stroke", "transplant", "pharmacy", "prescription", "regulator",
                         "approval", "immune", "clinic", "nurses", "surgeons", "pathogen", "screening"),
            "mental_health": ("anxiety", "depression", "stress", "therapy", "counselling", "mindfulness",
                              "burnout", "loneliness", "sleep", "insomnia", "wellbeing", "psychologist",
                              "psychiatrist", "trauma", "resilience", "mood", "meditation", "selfcare",
                              "panic", "stigma", "support", "helpline", "emotions", "coping", "addiction",
                              "cognitive", "behavioural"),
        },
    ),
    "entertainment": (
        ("star", "fans", "premiere", "award", "audience", "celebrity", "festival", "critics", "hit",
         "performance", "release", "studio"),
        {
            "movies": ("film", "director", "actor", "actress", "box", "office", "blockbuster", "cinema",
                       "screenplay", "sequel", "trailer", "oscars", "casting", "thriller", "comedy", "drama",
                       "animation", "franchise", "superhero", "screening", "producer", "cameo", "script",
                       "soundtrack", "filmmaker", "documentary", "hollywood"),
            "music": ("album", "singer", "band", "tour", "concert", "song", "single", "chart", "lyrics",
                      "guitar", "drummer", "rapper", "stage", "headline", "vinyl", "streaming", "playlist",
                      "grammy", "producer", "orchestra", "symphony", "jazz", "pop", "rock", "encore",
                      "setlist", "acoustic"),
            "television": ("series", "episode", "season", "finale", "showrunner", "sitcom", "streaming",
                           "network", "ratings", "broadcast", "reality", "host", "presenter", "pilot",
                           "spinoff", "cliffhanger", "cast", "viewers", "channel", "miniseries", "binge",
                           "renewed", "cancelled", "primetime", "anchor", "talkshow", "emmy"),
        },
    ),
    "lifestyle": (
        ("home", "weekend", "family", "style", "trend", "tips", "guide", "summer", "winter", "ideas",
         "favourite", "best"),
        {
            "food": ("recipe", "chef", "restaurant", "kitchen", "dinner", "baking", "bread", "pasta", "sauce",
                     "flavour", "ingredients", "oven", "roast", "dessert", "chocolate", "cheese", "wine",
                     "menu", "tasting", "street", "spices", "grill", "vegan", "brunch", "cafe", "seasonal",
                     "cuisine"),
            "fashion": ("designer", "runway", "collection", "clothes", "dress", "jacket", "shoes",
                        "sneakers", "catwalk", "models", "couture", "fabric", "tailoring", "wardrobe",
                        "outfit", "accessories", "handbag", "jewellery", "label", "vintage", "denim", "silk",
                        "knitwear", "boutique", "stylist", "season", "lookbook"),
            "travel": ("holiday", "destination", "flights", "airport", "airline", "hotel", "beach", "resort",
                       "passport", "luggage", "tourists", "itinerary", "cruise", "backpacking", "island",
                       "mountains", "hiking", "sightseeing", "booking", "visa", "train", "journey",
                       "adventure", "coast", "villa", "guidebook", "getaway"),
        },
    ),
    "world": (
        ("country", "international", "region", "border", "crisis", "united", "nations", "capital",
         "authorities", "civilians", "population", "aid"),
        {
            "conflict": ("troops", "military", "soldiers", "offensive", "frontline", "artillery", "missile",
                         "airstrike", "drone", "rebels", "insurgents", "militia", "shelling", "casualties",
                         "invasion", "occupation", "truce", "hostages", "siege", "commander", "defence",
                         "weapons", "battalion", "convoy", "warfare", "fighting", "peacekeepers"),
            "disasters": ("earthquake", "tsunami", "flood", "hurricane", "cyclone", "typhoon", "landslide",
                          "volcano", "eruption", "wildfire", "storm", "evacuation", "rescue", "survivors",
                          "rubble", "magnitude", "tremor", "emergency", "relief", "shelter", "damage",
                          "rainfall", "warning", "victims", "debris", "aftershock", "sandbags"),
            "migration": ("migrants", "refugees", "asylum", "seekers", "boats", "crossing", "camp",
                          "resettlement", "deportation", "smugglers", "visa", "residency", "citizenship",
                          "integration", "quota", "coastguard", "detention", "humanitarian", "unhcr",
                          "displaced", "arrivals", "processing", "sponsorship", "workers", "remittances",
                          "diaspora", "permits"),
        },
    ),
    "justice": (
        ("police", "court", "judge", "law", "crime", "charges", "investigation", "prosecutors",
         "lawyer", "case", "evidence", "sentence"),
        {
            "courts": ("trial", "jury", "verdict", "appeal", "testimony", "witness", "defendant", "plaintiff",
                       "ruling", "supreme", "hearing", "acquitted", "convicted", "guilty", "plea", "bail",
                       "injunction", "lawsuit", "damages", "settlement", "tribunal", "magistrate",
                       "barrister", "judgment", "cross", "examination", "custody"),
            "policing": ("officers", "arrest", "suspect", "patrol", "detectives", "robbery", "burglary",
                         "theft", "fraud", "raid", "warrant", "forensic", "cctv", "footage", "manhunt",
                         "stabbing", "shooting", "custody", "sergeant", "constable", "crackdown", "drugs",
                         "seized", "gang", "inquiry", "misconduct", "complaint"),
        },
    ),
}

# Words every news article uses regardless of topic: they add realistic noise without signal.
NEWS_WORDS: tuple[str, ...] = (
    "said", "says", "report", "reports", "new", "year", "week", "today", "yesterday", "people",
    "officials", "announced", "statement", "according", "latest", "first", "major", "plans", "expected",
    "warned", "million", "after", "amid", "despite", "news", "record", "time", "days", "month", "early",
    "local", "national", "public", "issue", "update", "decision", "sources", "confirmed", "number",
    "future",
)

FUNCTION_WORDS: tuple[str, ...] = (
    "the", "a", "an", "of", "to", "in", "and", "for", "on", "with", "as", "at", "by", "from", "that",
    "is", "was", "will", "has", "have", "its", "their", "this", "it", "be", "are", "were", "after",
    "over", "into", "more", "than", "but", "not", "about", "could", "would", "up", "out", "they",
    "he", "she", "who", "which", "while", "also", "most", "some", "what", "when",
)

# Headline verbs in groups of synonyms: a paraphrase swaps a verb for another of its group.
HEADLINE_VERBS: tuple[tuple[str, ...], ...] = (
    ("says", "claims", "insists", "argues"),
    ("warns", "cautions", "fears"),
    ("wins", "secures", "clinches", "takes"),
    ("faces", "confronts", "battles"),
    ("plans", "prepares", "weighs", "considers"),
    ("cuts", "slashes", "trims", "reduces"),
    ("raises", "lifts", "boosts", "increases"),
    ("delays", "postpones", "stalls"),
    ("launches", "unveils", "announces", "reveals"),
    ("backs", "supports", "endorses"),
    ("rejects", "dismisses", "refuses"),
    ("hits", "strikes", "slams"),
    ("eyes", "targets", "seeks"),
    ("ends", "halts", "stops"),
)
# Names that make headlines in every section.
NAMES: tuple[str, ...] = (
    "smith", "garcia", "northfield", "atlas", "meridian", "harbor", "kowalski", "tanaka", "okafor",
    "riverside", "crown", "union", "eastgate", "westbrook", "novak", "silva", "brennan", "halden",
    "vega", "lindqvist",
)

# fmt: on

# Fixed, independent of any simulation seed: which words each subcategory borrows.
SHARED_VOCABULARY_SEED = 20261120
BORROWED_WORDS_PER_PARTNER = 10
TYPO_PROBABILITY = 0.04


@dataclass(frozen=True)
class Taxonomy:
    """The category/subcategory tree; subcategory and category indices are positions in the tuples."""

    categories: tuple[str, ...]
    subcategories: tuple[str, ...]
    subcategory_category: np.ndarray  # subcategory index -> category index

    @classmethod
    def default(cls) -> Taxonomy:
        """The taxonomy of TOPICS, in declaration order."""
        categories = tuple(TOPICS)
        subcategories: list[str] = []
        parents: list[int] = []
        for category_index, (_, subtopics) in enumerate(TOPICS.values()):
            subcategories.extend(subtopics)
            parents.extend([category_index] * len(subtopics))
        return cls(categories, tuple(subcategories), np.asarray(parents, dtype=np.int64))

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def n_subcategories(self) -> int:
        return len(self.subcategories)


class ArticleTextGenerator:
    """Draws headlines and bodies whose content words come mostly, not only, from the article's topic."""

    # Content-word sources: (subcategory, borrowed by the subcategory, category, an off-topic
    # subcategory, news words); a headline's remaining words are a verb, names and function words.
    TITLE_MIX = np.array([0.38, 0.22, 0.14, 0.10, 0.16])
    # Bodies draw function words too (the last share).
    BODY_MIX = np.array([0.22, 0.12, 0.12, 0.06, 0.16, 0.32])
    FOLLOW_UP_WORD_SWAP = 0.35  # share of a paraphrased headline's content words redrawn

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self._subcategory_words = [
            np.asarray(words) for _, subtopics in TOPICS.values() for words in subtopics.values()
        ]
        self._category_words = [np.asarray(words) for words, _ in TOPICS.values()]
        self._news_words = np.asarray(NEWS_WORDS)
        self._function_words = np.asarray(FUNCTION_WORDS)
        self._function_set = frozenset(FUNCTION_WORDS)
        self._verb_group = {verb: group for group in HEADLINE_VERBS for verb in group}
        self._borrowed = self._shared_vocabulary()

    def _shared_vocabulary(self) -> list[np.ndarray]:
        """Per subcategory, words borrowed from a sibling and from a subcategory of another category."""
        rng = np.random.default_rng(SHARED_VOCABULARY_SEED)
        parents = self.taxonomy.subcategory_category
        borrowed = []
        for subcategory in range(self.taxonomy.n_subcategories):
            others = np.arange(len(parents)) != subcategory
            siblings = np.flatnonzero((parents == parents[subcategory]) & others)
            strangers = np.flatnonzero(parents != parents[subcategory])
            partners = [int(rng.choice(strangers))] + ([int(rng.choice(siblings))] if len(siblings) else [])
            words = [
                rng.choice(self._subcategory_words[p], size=BORROWED_WORDS_PER_PARTNER, replace=False)
                for p in partners
            ]
            borrowed.append(np.concatenate(words))
        return borrowed

    def _sources(self, rng: np.random.Generator, subcategory: int) -> tuple[np.ndarray, ...]:
        category = int(self.taxonomy.subcategory_category[subcategory])
        off_topic = int(rng.integers(self.taxonomy.n_subcategories))
        return (
            self._subcategory_words[subcategory],
            self._borrowed[subcategory],
            self._category_words[category],
            self._subcategory_words[off_topic],
            self._news_words,
            self._function_words,
        )

    def _words(self, rng: np.random.Generator, subcategory: int, count: int, mix: np.ndarray) -> list[str]:
        sources = self._sources(rng, subcategory)[: len(mix)]
        source_of_word = rng.choice(len(sources), size=count, p=mix)
        words = np.empty(count, dtype=object)
        for source_index, source in enumerate(sources):
            slots = np.flatnonzero(source_of_word == source_index)
            words[slots] = source[rng.integers(len(source), size=len(slots))]
        return [_with_typo(rng, word) for word in words]

    def title(self, rng: np.random.Generator, subcategory: int) -> str:
        """A headline of 6-15 words: content words around a verb, sometimes a name, function words."""
        length = int(rng.integers(6, 16))
        content = self._words(rng, subcategory, max(3, round(0.6 * length)), self.TITLE_MIX)
        group = HEADLINE_VERBS[int(rng.integers(len(HEADLINE_VERBS)))]
        words = content[: len(content) // 2] + [str(rng.choice(group))] + content[len(content) // 2 :]
        if rng.random() < 0.4:
            words.insert(0, str(rng.choice(NAMES)))
        return _headline(rng, words, length, self._function_words)

    def paraphrase(self, rng: np.random.Generator, title: str, subcategory: int) -> str:
        """Another wording of a headline, for an article of `subcategory` (the same story or a follow-up).

        Verbs become synonyms, about a third of the content words are redrawn from the new article's
        own mixture, function words come and go, and the headline may be turned around its verb.
        """
        kept: list[str] = []
        for word in title.lower().split():
            if word in self._verb_group:
                kept.append(str(rng.choice(self._verb_group[word])))
            elif word in self._function_set:
                if rng.random() < 0.7:
                    kept.append(word)
            elif rng.random() < self.FOLLOW_UP_WORD_SWAP:
                kept.extend(self._words(rng, subcategory, 1, self.TITLE_MIX))
            else:
                kept.append(word)
        if len(kept) > 2 and rng.random() < 0.5:
            pivot = int(rng.integers(1, len(kept)))
            kept = kept[pivot:] + kept[:pivot]
        return _headline(rng, kept, int(np.clip(len(kept), 6, 15)), self._function_words)

    def body(self, rng: np.random.Generator, subcategory: int) -> str:
        """A body of 40-130 words in sentences of 6-18 words (an edit may append up to 16 more)."""
        words = self._words(rng, subcategory, int(rng.integers(40, 131)), self.BODY_MIX)
        sentences: list[str] = []
        start = 0
        while start < len(words):
            length = int(rng.integers(6, 19))
            sentences.append(" ".join(words[start : start + length]).capitalize() + ".")
            start += length
        return " ".join(sentences)

    def correction(self, rng: np.random.Generator, subcategory: int) -> str:
        """A sentence appended to a body when the article is edited."""
        words = self._words(rng, subcategory, int(rng.integers(8, 16)), self.BODY_MIX)
        return "Update: " + " ".join(words) + "."


def _headline(rng: np.random.Generator, words: list[str], length: int, function_words: np.ndarray) -> str:
    """`words` filled up with function words at random places, or cut, to `length` words."""
    words = list(words[:length])
    while len(words) < length:
        words.insert(int(rng.integers(1, len(words) + 1)), str(rng.choice(function_words)))
    return " ".join(words).capitalize()


def _with_typo(rng: np.random.Generator, word: str) -> str:
    """The word, or now and then the word with two neighbouring letters swapped."""
    if len(word) < 4 or rng.random() >= TYPO_PROBABILITY:
        return word
    i = int(rng.integers(1, len(word) - 2))
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
