"""Writes `u.data` beside this script: a small MovieLens-100K-format ratings file for the tests.

    python data/movielens/make_fixture.py          # rewrites data/movielens/u.data

The format is ml-100k's `u.data` exactly: `user id<TAB>item id<TAB>rating<TAB>timestamp`, integers,
ratings 1..5, ids from 1, timestamps in epoch seconds, lines in no particular order. The content is
made up but has the structure the fitting relies on: four taste groups of items ("genres"), users
who like one or two of them, a heavy-tailed item popularity and heavy-tailed user activity, and
higher ratings inside a user's tastes. A few item ids are never rated, so raw ids have gaps the
reader must re-index.

Only the standard library's `random.Random(seed).random()` is used (its stream is fixed across
Python versions), so the same seed writes the same bytes anywhere.
"""
import math
import os
import random

SEED = 100
NUM_USERS = 60
NUM_ITEMS = 126
NUM_GROUPS = 4
UNRATED_ITEMS = (7, 50, 99)  # Gaps in the raw item ids.
START = 874724710  # 1997-09-20, where ml-100k's timestamps begin.


def main(path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "u.data")):
  rng = random.Random(SEED)
  pick = lambda n: int(rng.random() * n)  # noqa: E731
  # Items: a main group, sometimes a second one; popularity Zipf-like by a random rank.
  ranks = list(range(1, NUM_ITEMS + 1))
  for i in range(len(ranks) - 1, 0, -1):  # Fisher-Yates with rng.random() only.
    j = pick(i + 1)
    ranks[i], ranks[j] = ranks[j], ranks[i]
  items = []
  for item in range(1, NUM_ITEMS + 1):
    groups = {pick(NUM_GROUPS)}
    if rng.random() < 0.2:
      groups.add(pick(NUM_GROUPS))
    items.append((item, groups, 1.0 / ranks[item - 1] ** 0.8))
  lines = []
  for user in range(1, NUM_USERS + 1):
    tastes = {pick(NUM_GROUPS)}
    if rng.random() < 0.4:
      tastes.add(pick(NUM_GROUPS))
    # Heavy-tailed activity: 20..110 ratings.
    count = min(110, int(20 + 15 * math.exp(1.2 * (rng.random() * 2 - 1)) * rng.random() * 3))
    weights = [(item, pop * (8.0 if groups & tastes else 0.4), groups)
               for item, groups, pop in items if item not in UNRATED_ITEMS]
    t = START + pick(180 * 86400)
    for _ in range(count):
      # Weighted draw without replacement.
      total = sum(w for _, w, _ in weights)
      x, k = rng.random() * total, 0
      while k < len(weights) - 1 and x >= weights[k][1]:
        x -= weights[k][1]
        k += 1
      item, _, groups = weights.pop(k)
      liked = bool(groups & tastes)
      rating = (4 if liked else 3) + (1 if rng.random() < 0.35 else 0) - \
          (1 if rng.random() < 0.3 else 0) - (1 if not liked and rng.random() < 0.3 else 0)
      rating = max(1, min(5, rating))
      t += 1 + pick(3 * 86400 if rng.random() < 0.1 else 900)  # Sessions of minutes, gaps of days.
      lines.append(f"{user}\t{item}\t{rating}\t{t}\n")
  for i in range(len(lines) - 1, 0, -1):  # ml-100k's lines are in no particular order either.
    j = pick(i + 1)
    lines[i], lines[j] = lines[j], lines[i]
  with open(path, "w", newline="\n") as f:
    f.writelines(lines)
  print(f"wrote {len(lines)} ratings to {path}")


if __name__ == "__main__":
  main()
