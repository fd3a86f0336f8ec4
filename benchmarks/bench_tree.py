"""Category tree build time against nltk's bare walk of WordNet, in one run.

    python benchmarks/bench_tree.py

Prints: the time for nltk alone to walk all 82,115 noun synsets (bare `all_synsets`, and
with each synset's lemmas, gloss and hypernyms, what any tree builder must touch), the time of `imgnet tree build`
over all of WordNet (filter + SQLite writes) and their ratio (target: at most 2x), and
the time of a small subtree build (dog.n.01) once WordNet is loaded (target: under 1 s).
Each figure is in a fresh process, so nltk's caches do not carry over.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

BARE_WALK = """
import time
from imgnet_build.wordnet import load_wordnet
wn = load_wordnet()
start = time.perf_counter()
count = sum(1 for _ in wn.all_synsets("n"))
print(count, time.perf_counter() - start)
"""

WALK = """
import time
from imgnet_build.wordnet import load_wordnet
wn = load_wordnet()
start = time.perf_counter()
count = 0
for synset in wn.all_synsets("n"):
    synset.lemma_names(); synset.definition(); synset.hypernyms()
    count += 1
print(count, time.perf_counter() - start)
"""

BUILD = """
import sys, time
from imgnet_build.wordnet import load_wordnet
from imgnet_build.workspace import Workspace
from imgnet_build.taxonomy import TreeOptions, build_tree
load_wordnet()
ws = Workspace.init(sys.argv[1])
roots = tuple(sys.argv[2:])
start = time.perf_counter()
result = build_tree(ws, TreeOptions(roots=roots))
print(result.categories, time.perf_counter() - start)
"""


def run(code: str, *args: str) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True).stdout
    count, seconds = out.split()
    return int(count), float(seconds)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        synsets, bare = run(BARE_WALK)
        _, walk = run(WALK)
        categories, build = run(BUILD, f"{tmp}/all")
        dog_categories, dog = run(BUILD, f"{tmp}/dog", "dog.n.01")
    rows = [
        ("nltk: all_synsets('n'), nothing else", synsets, bare),
        ("nltk: walk + lemmas, gloss, hypernyms", synsets, walk),
        ("imgnet tree build (all of WordNet)", categories, build),
        ("imgnet tree build --root dog.n.01", dog_categories, dog),
    ]
    print(f"{'':40} {'items':>8} {'seconds':>8}")
    for name, count, seconds in rows:
        print(f"{name:40} {count:>8} {seconds:>8.2f}")
    print(f"full build / bare walk: {build / bare:.2f}x, / walk with fields: {build / walk:.2f}x (target <= 2x); "
          f"dog subtree {dog:.2f} s (target < 1 s)")
    print(json.dumps({"nltk_bare_walk_s": bare, "nltk_walk_s": walk, "full_build_s": build,
                      "ratio_bare": build / bare, "ratio": build / walk, "dog_build_s": dog}))


if __name__ == "__main__":
    main()
