"""The exceptions the library raises: `ImgnetError`s, which the CLI prints as `Error: …` and
exits 1, and `ItemError`s, one item's outcome, which never leave the per-item boundary."""

__all__ = [
    "ImgnetError",
    "ItemError",
    "NotAWorkspace",
    "WorkspaceExists",
    "DatabaseUnavailable",
    "ReadOnlyWorkspace",
    "SourceUnreachable",
    "WordNetMissing",
    "UnknownSynset",
    "NotImageable",
    "BadInput",
    "UnknownSource",
    "LanguageDataMissing",
    "MissingCredentials",
    "ExportTargetExists",
    "ExportFailed",
]


class ImgnetError(Exception):
    "Base of every error the tool reports to the user"


class ItemError(Exception):
    """Base of per-item outcomes (a URL refused, a file that is not an image, an unreadable
    answer): caught where one item is handled and stored as that item's status and reason.
    Not an ImgnetError: one that escaped would be a bug, and must not read as the run's error."""


class NotAWorkspace(ImgnetError):
    "The folder does not exist or holds no imgnet.toml"


class WorkspaceExists(ImgnetError):
    "imgnet init was asked to create a workspace where one already is"


class DatabaseUnavailable(ImgnetError):
    "The workspace database cannot be reached or opened"


class ReadOnlyWorkspace(DatabaseUnavailable):
    "A command that writes was run on a workspace whose database folder is read-only"


class SourceUnreachable(ImgnetError):
    "A search API cannot be reached at all (no network, a wrong address): the gather stops"


class WordNetMissing(ImgnetError):
    "No WordNet 3.0 data could be found, downloaded or built"


class UnknownSynset(ImgnetError):
    "A SYNSET argument names no WordNet synset"


class NotImageable(ImgnetError):
    "A synset exists but the imageability filter (or its part of speech) excludes it"


class BadInput(ImgnetError):
    "A user-supplied file or option is unusable as a whole"


class UnknownSource(ImgnetError):
    "A --source SPEC names no registered source"


class LanguageDataMissing(ImgnetError):
    "Queries in another language were asked for, but the Open Multilingual WordNet data lacks it"


class MissingCredentials(ImgnetError):
    "A source needs an API key (or other secret) that is not set"


class ExportTargetExists(ImgnetError):
    "imgnet export was pointed at a non-empty folder without --overwrite"


class ExportFailed(ImgnetError):
    "A written export failed its own check (leakage, a missing file); nothing was put in place"
