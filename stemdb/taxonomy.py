"""The instrument taxonomy: source labels and file names to stem kinds (``ingest.taxonomy`` in data.yaml).

Two tables, both case-insensitive:

- ``labels``: an instrument label as a dataset writes it (MedleyDB's ``instrument``, MoisesDB's stem names and
  track types, Slakh's ``inst_class``) to a kind;
- ``patterns``: regular expressions searched in a file name (its stem, normalised: CamelCase and digits split,
  ``_ - . ( ) [ ]`` to spaces, lower case, so ``07_LeadVox`` reads ``07 lead vox``) to a kind, tried in order.

The built-in tables (:data:`DEFAULT_LABELS`, :data:`DEFAULT_PATTERNS`) cover MedleyDB's, MoisesDB's and Slakh's
labels and common session track names; a project's entries come first (a label of its own overrides the default,
its patterns are tried before the defaults), and ``defaults: false`` drops the built-in tables. Kinds are
``vocals``, ``drums``, ``bass``, ``guitar``, ``keys``, ``other`` and ``mixture`` (or any kind a user names). A name
or label no rule maps is *unmapped*: ingest lists it (a reject with reason ``unmapped: ...``), never calls it
``other`` on its own.
"""

from __future__ import annotations

import re
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator

_VOCALS = ("male singer", "female singer", "male speaker", "female speaker", "male rapper", "female rapper",
           "vocalists", "choir", "beatboxing", "vocals", "lead vocals", "backing vocals", "background vocals",
           "lead male singer", "lead female singer", "male background vocals", "female background vocals", "vocal",
           "voice", "singer", "rap", "other (vocals)")
_DRUMS = ("drum set", "drum machine", "kick drum", "snare drum", "bass drum", "toms", "tom", "high hat", "hi-hat",
          "cymbal", "overheads", "drums", "percussion", "auxiliary percussion", "tambourine", "shaker", "claps",
          "clap", "cowbell", "bongo", "conga", "tabla", "darbuka", "doumbek", "cajon", "timbales", "snare",
          "kick", "room", "percussive", "drum", "other (drums)", "other (percussion)", "drum kit")
_BASS = ("electric bass", "double bass", "bass guitar", "bass", "synth bass", "acoustic bass", "bass synthesizer",
         "contrabass", "other (bass)")
_GUITAR = ("acoustic guitar", "clean electric guitar", "distorted electric guitar", "electric guitar",
           "lap steel guitar", "slide guitar", "guitar", "other (guitar)", "12-string guitar")
_KEYS = ("piano", "tack piano", "electric piano", "grand piano", "organ", "electric organ", "organ, electric organ",
         "harpsichord", "synthesizer", "synth lead", "synth pad", "keyboard", "keys", "other_keys", "rhodes",
         "clavinet", "chromatic percussion", "glockenspiel", "vibraphone", "xylophone", "marimba", "celesta",
         "other (keys)", "other (piano)", "pipe")
_OTHER = ("violin", "viola", "cello", "string section", "strings", "strings (continued)", "bowed_strings",
          "ensemble", "trumpet", "trombone", "french horn", "horn section", "brass section", "brass", "tuba",
          "euphonium", "alto saxophone", "tenor saxophone", "baritone saxophone", "soprano saxophone", "saxophone",
          "sax", "flute", "piccolo", "clarinet", "bass clarinet", "oboe", "bassoon", "reed", "wind", "harmonica",
          "accordion", "melodica", "harmonium", "banjo", "mandolin", "ukulele", "harp", "sitar", "oud", "erhu",
          "dizi", "zhongruan", "guzheng", "yangqin", "liuqin", "bamboo flute", "fx/processed sound", "sampler",
          "scratches", "sound effects", "synth effects", "fx", "ethnic", "other_plucked", "other", "timpani",
          "gong", "bells", "other (wind)", "other (strings)")

#: Built-in label table (lower case).
DEFAULT_LABELS: dict[str, str] = {
    **{k: "vocals" for k in _VOCALS}, **{k: "drums" for k in _DRUMS}, **{k: "bass" for k in _BASS},
    **{k: "guitar" for k in _GUITAR}, **{k: "keys" for k in _KEYS}, **{k: "other" for k in _OTHER},
}

#: Built-in file-name rules, in order (first match wins), searched in the normalised name (:func:`normalise`).
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\b(bass ?drum|kick|kik|kck|bd|snare|snr|sn|sd|overheads?|oh|ohs|hi ?hats?|hh|hat|toms?|floor ?tom|ft|"
     r"rooms?|ride|crash|cymbals?|drums?|drm|kit|perc|percussion|shaker|tamb|tambourine|clap|claps|cowbell|"
     r"congas?|bongos?|cajon)\b", "drums"),
    (r"\b(ld|lead|main|bk|bck|back|backing|bg|bgv|bgvs|bv|bvs|harm|harmony|dbl|double)? ?(vox|vocals?|voc|vcl|"
     r"singer|voice|acapella|acappella|a ?cappella|rap|choir|chorus vox|adlibs?)\b", "vocals"),
    (r"\b(bvs?|bgvs?|vox)\b", "vocals"),
    (r"\b(bass|bss|bass di|bass amp|sub ?bass|synth ?bass|upright|contrabass|double bass)\b", "bass"),
    (r"\b(gtrs?|guitars?|gtr|acgtr|eg|ag|dist|distgtr|clean ?gtr|lead ?gtr|rhythm ?gtr|strat|tele|les paul)\b",
     "guitar"),
    (r"\b(piano|pno|pf|keys?|kbd|keyboards?|organ|org|hammond|b3|rhodes|wurli|wurlitzer|synths?|syn|pad|pads|"
     r"lead synth|arp|clav|clavinet|mellotron|epiano|ep)\b", "keys"),
    (r"\b(strings?|str|vln|violins?|viola|vla|cello|vc|brass|horns?|trumpet|tpt|trombone|tbn|sax|saxophone|"
     r"flute|fl|clarinet|cl|oboe|bassoon|harmonica|harp|accordion|banjo|mandolin|ukulele|uke|fx|sfx)\b",
     "other"),
    (r"\b(mix|mixture|mixdown|master|full mix|stereo mix)\b", "mixture"),  # last: "Drums Mix" is drums
)

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")
_SEPARATORS = re.compile(r"[_\-.()\[\]{},+&]+|\s+")


def normalise(name: str) -> str:
    """A file name (without its ending) as the patterns see it: ``"07_LeadVox"`` -> ``"07 lead vox"``."""
    return " ".join(_SEPARATORS.sub(" ", _CAMEL.sub(" ", name)).split()).lower()


class Taxonomy(BaseModel):
    """The ``ingest.taxonomy`` section: ``labels`` (label -> kind), ``patterns`` (``[regex, kind]`` pairs, tried in
    order before the built-in ones) and ``defaults`` (keep the built-in tables)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[str, str] = Field(default_factory=dict)
    patterns: tuple[tuple[str, str], ...] = ()
    defaults: bool = True

    @field_validator("patterns")
    @classmethod
    def _regex(cls, v: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for pattern, _kind in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") from exc
        return v

    @cached_property
    def _labels(self) -> dict[str, str]:
        own = {k.strip().lower(): v for k, v in self.labels.items()}
        return {**DEFAULT_LABELS, **own} if self.defaults else own

    @cached_property
    def _patterns(self) -> list[tuple[re.Pattern[str], str]]:
        rules = list(self.patterns) + (list(DEFAULT_PATTERNS) if self.defaults else [])
        return [(re.compile(p, re.IGNORECASE), k) for p, k in rules]

    def kind_of_label(self, label: str | None) -> str | None:
        """The kind of an instrument label, ``None`` when no rule maps it."""
        return None if not label else self._labels.get(str(label).strip().lower())

    def kind_of_name(self, name: str) -> str | None:
        """The kind of a file name (ending dropped, normalised), ``None`` when no pattern matches."""
        stem = name.rsplit("/", 1)[-1]
        stem = stem.rsplit(".", 1)[0] if "." in stem else stem
        text = normalise(stem)
        return next((k for p, k in self._patterns if p.search(text)), None)


__all__ = ["DEFAULT_LABELS", "DEFAULT_PATTERNS", "Taxonomy", "normalise"]
