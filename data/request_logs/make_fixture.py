"""Writes the `request_logs` fixtures: the same small log in both documented layouts.

    python data/request_logs/make_fixture.py      # -> data/request_logs/{one_row,two_tables}/

40 users, 80 items (string ids), 4 dates, 240 requests: each request recalls 12 items (stages
prerank -> rank -> rerank), exposes the 4 that reached rerank, and the user clicks each exposed item
with a probability that grows with a hidden user-item affinity. Deterministic (seed 7).
"""
import csv
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATES = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
STAGES = ["prerank", "rank", "rerank"]


def main():
  rng = np.random.default_rng(7)
  users, items = 40, 80
  taste, style = rng.normal(size=(users, 4)), rng.normal(size=(items, 4))
  categories = rng.integers(0, 5, items)
  rows, exposures, recalls = [], [], []
  rid = 1000
  for day, date in enumerate(DATES):
    for u in rng.choice(users, 60, replace=True):
      rid += 1
      timestamp = 1_709_251_200 + day * 86_400 + int(rng.integers(0, 86_000))
      scores = style @ taste[u] + rng.normal(scale=1.0, size=items)
      recalled = np.argsort(-scores)[:12]
      stages = ["rerank"] * 4 + ["rank"] * 4 + ["prerank"] * 4
      exposed = recalled[:4]
      clicked = (rng.random(4) < 1 / (1 + np.exp(-(style[exposed] @ taste[u]) + 1))).astype(int)
      user = f"u{u:03d}"
      age, city = str(20 + 10 * (u % 4)), ["berlin", "paris", "rome"][u % 3]
      rows.append({"request_id": rid, "timestamp": timestamp, "date": date, "user_id": user,
                   "age": age, "city": city,
                   "exposed": " ".join(f"v{i}" for i in exposed),
                   "clicked": " ".join(map(str, clicked)),
                   "recalled": " ".join(f"v{i}" for i in recalled),
                   "recalled_stage": " ".join(stages)})
      for position, (item, click) in enumerate(zip(exposed, clicked)):
        exposures.append({"request_id": rid, "timestamp": timestamp, "date": date, "user_id": user,
                          "item_id": f"v{item}", "position": position, "clicked": int(click),
                          "age": age, "city": city})
      recalls += [{"request_id": rid, "item_id": f"v{i}", "stage": s}
                  for i, s in zip(recalled, stages)]
  item_rows = [{"item_id": f"v{i}", "category": f"c{categories[i]}", "author": f"a{i % 9}"}
               for i in range(items)]
  for layout, tables in (("one_row", {"requests": rows}),
                         ("two_tables", {"exposures": exposures, "recalls": recalls})):
    out = os.path.join(HERE, layout)
    os.makedirs(out, exist_ok=True)
    for name, table in {**tables, "items": item_rows}.items():
      with open(os.path.join(out, f"{name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    with open(os.path.join(out, "stages.txt"), "w") as f:
      f.write("\n".join(STAGES) + "\n")
    with open(os.path.join(out, "splits.json"), "w") as f:
      json.dump({"train": DATES[:3], "test": DATES[3:]}, f)


if __name__ == "__main__":
  main()
