"""Writes a tiny RecFlow in the released layout beside this script, for the tests.

    python data/recflow/make_fixture.py            # rewrites data/recflow/RecFlow/

The layout, file names, columns and pickled structures are those of the real release (README of
github.com/RecFlow-ICLR/RecFlow and its data-loading code, see uma2_tf/sources/recflow_files.py):

    RecFlow/
      realshow/<date>.feather               exposed samples, one row per (request, video)
      all_stage/<date>.feather              samples of every stage (exposed ones included), same
                                            columns
      request_id_dict/<date>.pkl            {request_id: {stage: int64[n, 8]}}
      seq_effective_50_dict/<date>.pkl      {request_id: int64[50, 10]} (effective-view history)
      others/id_cnt.pkl                     {field: number of ids}
      others/realshow_video_info_daily/<date>.feather   exposed videos up to that day

Feather files are written by pandas' `to_feather` (pyarrow, Feather v2), every column int64 (the
README types every field "Integer"; the reader accepts any integer width). Raw ids start at 0 as in
the release (its code adds 1 to make room for padding), and video 0 is used, so the remapping to
this repo's ids (0 = padding) is exercised.

Content: 3 days (2024-01-13, -14 train; -15 test), 8 users, 160 videos in 5 top categories; each
user prefers one or two categories; every request has 4-6 exposed videos (effective_view more
likely inside the user's taste; long_view and like subsets of it) and about 24 stage samples:
prerank_neg 8, coarse_neg 6, rank_neg 4, rank_pos 2, rerank_neg 2, rerank_pos 2, one flag per row.
The first request (request_id 1000001, user 0, 2024-01-13) is written by hand; the tests check its
record item by item:

    exposed (rerank_index order)  3 (effective_view, like), 17, 42 (effective_view, long_view), 8
    prerank_neg   50, 51, 0, 71        coarse_neg  60, 61
    rank_neg      70, 71 (71 also a prerank_neg row: its furthest stage is rank_neg)
    rank_pos      72                   rerank_neg  80          rerank_pos  81

Its realshow rows are written out of position order (the reader sorts by rerank_index). One extra
request (1000099) has stage samples but no exposure, as the release's all_stage can have; the
reader leaves it out. The optional `ubm_seq_request_id_dict/` and the test files of `others/`
(retrieval_test.feather, ...) are not written: the builder does not read them.

Only `random.Random(seed)` draws the content, so the same seed gives the same data (file bytes also
depend on the pyarrow version's Feather writer).
"""
import datetime
import os
import pickle
import random
import shutil

import numpy as np
import pandas as pd

SEED = 7
DATES = ("2024-01-13", "2024-01-14", "2024-01-15")
NUM_USERS = 8
NUM_VIDEOS = 160
NUM_CATEGORIES = 5
STAGE_COUNTS = (("prerank_neg", 8), ("coarse_neg", 6), ("rank_neg", 4), ("rank_pos", 2),
                ("rerank_neg", 2), ("rerank_pos", 2))
FLAGS = ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg",
         "prerank_neg")
LABELS = ("effective_view", "long_view", "like", "follow", "forward", "comment")
# The README's column order.
COLUMNS = ("request_id", "request_timestamp", "user_id", "device_id", "age", "gender", "province",
           "video_id", "author_id", "category_level_one", "category_level_two", "upload_type",
           "upload_timestamp", "duration", "realshow", "rerank_pos", "rerank_neg", "rank_pos",
           "rank_neg", "coarse_neg", "prerank_neg", "rank_index", "rerank_index", "playing_time",
           "effective_view", "long_view", "like", "follow", "forward", "comment")
# request_id_dict arrays (the release's code: 0 video_id, 1 author_id, 2 duration, 3 cate_two,
# 4 upload_type, 5 upload_timestamp, 6 cate_one, 7 effective_view).
REQUEST_DICT_COLUMNS = ("video_id", "author_id", "duration", "category_level_two", "upload_type",
                        "upload_timestamp", "category_level_one", "effective_view")
# seq_effective_50_dict arrays (0 video_id, 1 author_id, 2 cate_two, 3 cate_one, 4 upload_type,
# 5 upload_time, 6 duration_ms, 7 time_ms, 8 playing_time, 9 request_id); padding rows first.
SEQ_LEN = 50

HAND_REQUEST = dict(
    request_id=1000001, user=0, exposed=[(3, 1, 0, 1), (17, 0, 0, 0), (42, 1, 1, 0), (8, 0, 0, 0)],
    stages={"prerank_neg": [50, 51, 0, 71], "coarse_neg": [60, 61], "rank_neg": [70, 71],
            "rank_pos": [72], "rerank_neg": [80], "rerank_pos": [81]},
    realshow_row_order=[2, 0, 3, 1])  # Positions of the exposed rows as written to realshow.
NO_EXPOSURE_REQUEST = 1000099


def epoch_ms(date: str, seconds: int) -> int:
  day = datetime.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
  return int(day.timestamp() * 1000) + seconds * 1000


def make_world(rng):
  videos = []
  for v in range(NUM_VIDEOS):
    cat = v % NUM_CATEGORIES
    videos.append(dict(video_id=v, author_id=(v * 7) % 40, category_level_one=cat,
                       category_level_two=cat * 3 + rng.randrange(3), upload_type=rng.randrange(4),
                       upload_timestamp=1704000000 + rng.randrange(900000),
                       duration=rng.choice((4000, 8000, 15000, 25000, 45000, 90000, 200000,
                                            700000))))
  users = []
  for u in range(NUM_USERS):
    tastes = {u % NUM_CATEGORIES} | ({(u + 2) % NUM_CATEGORIES} if u % 3 == 0 else set())
    users.append(dict(user_id=u, device_id=100 + u, age=u % 4, gender=u % 2, province=(u * 5) % 11,
                      tastes=tastes))
  return videos, users


def draw_request(rng, videos, user):
  """Exposed (video, effective_view, long_view, like) and stage -> videos, all distinct."""
  liked = [v["video_id"] for v in videos if v["category_level_one"] in user["tastes"]]
  pool = list(range(NUM_VIDEOS))
  rng.shuffle(pool)
  used = set()

  def take(n, on_taste):
    out = []
    for v in (liked if rng.random() < on_taste else pool):
      if len(out) == n:
        break
      if v not in used and rng.random() < 0.5:
        used.add(v)
        out.append(v)
    while len(out) < n:  # Top up from anything unused.
      v = rng.randrange(NUM_VIDEOS)
      if v not in used:
        used.add(v)
        out.append(v)
    return out

  exposed = []
  for v in take(4 + rng.randrange(3), on_taste=0.8):
    on = videos[v]["category_level_one"] in user["tastes"]
    ev = int(rng.random() < (0.7 if on else 0.15))
    exposed.append((v, ev, int(ev and rng.random() < 0.4), int(ev and rng.random() < 0.25)))
  stages = {name: take(n, on_taste=0.2 + 0.1 * i) for i, (name, n) in enumerate(STAGE_COUNTS)}
  return exposed, stages


def rows_of_request(rid, ts, user, videos, exposed, stages, realshow_row_order=None):
  """realshow rows (in file order) and all_stage rows of one request."""
  def row(video, flag, rank_index, rerank_index, labels=(0, 0, 0)):
    v = videos[video]
    ev, lv, lk = labels
    r = dict(request_id=rid, request_timestamp=ts, user_id=user["user_id"],
             device_id=user["device_id"], age=user["age"], gender=user["gender"],
             province=user["province"], video_id=video, author_id=v["author_id"],
             category_level_one=v["category_level_one"],
             category_level_two=v["category_level_two"], upload_type=v["upload_type"],
             upload_timestamp=v["upload_timestamp"], duration=v["duration"],
             **{f: int(f == flag) for f in FLAGS}, rank_index=rank_index, rerank_index=rerank_index,
             playing_time=(v["duration"] * (1 + lv) // 2 if ev
                           else 1200 if flag == "realshow" else 0),
             effective_view=ev, long_view=lv, like=lk, follow=0, forward=0, comment=0)
    return r

  shown = [row(v, "realshow", i, i, (ev, lv, lk)) for i, (v, ev, lv, lk) in enumerate(exposed)]
  order = realshow_row_order or list(range(len(shown)))
  realshow = [shown[i] for i in order]
  staged = []
  for name, vids in stages.items():
    for j, v in enumerate(vids):
      rank_index = j + 10 if name.startswith("rank") or name.startswith("rerank") else 0
      rerank_index = j + 10 if name.startswith("rerank") else 0
      staged.append(row(v, name, rank_index, rerank_index))
  return realshow, shown + staged


def request_dict_entry(rows):
  by_stage = {}
  for r in rows:
    flag = next(f for f in FLAGS if r[f] == 1)
    by_stage.setdefault(flag, []).append([r[c] for c in REQUEST_DICT_COLUMNS])
  return {k: np.array(v, dtype=np.int64) for k, v in by_stage.items()}


def seq_array(history):
  """history: (video row dict, request row) of the user's effective views, oldest first."""
  arr = np.zeros((SEQ_LEN, 10), dtype=np.int64)
  recent = history[-SEQ_LEN:]
  for k, r in enumerate(recent):
    arr[SEQ_LEN - len(recent) + k] = [r["video_id"], r["author_id"], r["category_level_two"],
                                      r["category_level_one"], r["upload_type"],
                                      r["upload_timestamp"], r["duration"], r["request_timestamp"],
                                      r["playing_time"], r["request_id"]]
  return arr


def frame(rows):
  df = pd.DataFrame(rows, columns=list(COLUMNS))
  return df.astype({c: np.int64 for c in COLUMNS}).reset_index(drop=True)


def main(out=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RecFlow")):
  rng = random.Random(SEED)
  videos, users = make_world(rng)
  if os.path.exists(out):
    shutil.rmtree(out)
  for sub in ("realshow", "all_stage", "request_id_dict", "seq_effective_50_dict",
              "others/realshow_video_info_daily"):
    os.makedirs(os.path.join(out, sub))
  next_rid = 1000001
  history = {u["user_id"]: [] for u in users}
  shown_videos = set()
  for d, date in enumerate(DATES):
    realshow_rows, stage_rows, request_dict, seq_dict = [], [], {}, {}
    # Two requests per user and day, in time order (users interleaved).
    slots = sorted(((rng.randrange(80000), u) for u in users for _ in range(2)), key=lambda s: s[0])
    for seconds, user in slots:
      rid = next_rid
      next_rid += 1
      ts = epoch_ms(date, seconds)
      if rid == HAND_REQUEST["request_id"]:
        user = users[HAND_REQUEST["user"]]
        exposed, stages = HAND_REQUEST["exposed"], HAND_REQUEST["stages"]
        order = HAND_REQUEST["realshow_row_order"]
      else:
        exposed, stages = draw_request(rng, videos, user)
        order = None
      shown, staged = rows_of_request(rid, ts, user, videos, exposed, stages, order)
      realshow_rows += shown
      stage_rows += staged
      request_dict[rid] = request_dict_entry(staged)
      seq_dict[rid] = seq_array(history[user["user_id"]])
      history[user["user_id"]] += [r for r in sorted(shown, key=lambda r: r["rerank_index"])
                                   if r["effective_view"] == 1]
      shown_videos |= {r["video_id"] for r in shown}
    if d == 0:  # Stage samples of a request that showed nothing.
      user = users[1]
      _, stages = draw_request(rng, videos, user)
      _, staged = rows_of_request(NO_EXPOSURE_REQUEST, epoch_ms(date, 85000), user, videos, [],
                                  stages)
      stage_rows += staged
      request_dict[NO_EXPOSURE_REQUEST] = request_dict_entry(staged)
      seq_dict[NO_EXPOSURE_REQUEST] = seq_array(history[user["user_id"]])
    frame(realshow_rows).to_feather(os.path.join(out, "realshow", f"{date}.feather"))
    frame(stage_rows).to_feather(os.path.join(out, "all_stage", f"{date}.feather"))
    for sub, obj in (("request_id_dict", request_dict), ("seq_effective_50_dict", seq_dict)):
      with open(os.path.join(out, sub, f"{date}.pkl"), "wb") as f:
        pickle.dump(obj, f, protocol=4)
    info = pd.DataFrame([{k: videos[v][k] for k in ("video_id", "author_id", "category_level_one",
                                                     "category_level_two", "upload_type",
                                                     "upload_timestamp", "duration")}
                         for v in sorted(shown_videos)]).astype(np.int64)
    info.to_feather(os.path.join(out, "others", "realshow_video_info_daily", f"{date}.feather"))
  # Number of ids of each field; the release's code reads both 'video_id' and 'photo_id'.
  id_cnt = {"user_id": NUM_USERS, "device_id": 100 + NUM_USERS, "age": 4, "gender": 2,
            "province": 11, "video_id": NUM_VIDEOS, "photo_id": NUM_VIDEOS, "author_id": 40,
            "category_level_one": NUM_CATEGORIES, "category_level_two": NUM_CATEGORIES * 3,
            "upload_type": 4}
  with open(os.path.join(out, "others", "id_cnt.pkl"), "wb") as f:
    pickle.dump(id_cnt, f, protocol=4)


if __name__ == "__main__":
  main()
