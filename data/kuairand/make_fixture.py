"""Writes a tiny KuaiRand-Pure look-alike beside this script, for the tests.

    python data/kuairand/make_fixture.py        # rewrites the five CSV files of data/kuairand/

The files have KuaiRand-Pure's names, headers (every column, in the real order) and cell formats
(see uma2_tf/sources/kuairand.py for the layout and where it was checked); the values are made up:

  log_standard_4_08_to_4_21_pure.csv   standard exposures on 2022-04-19 .. 2022-04-21
  log_standard_4_22_to_5_08_pure.csv   standard exposures on 2022-05-06 .. 2022-05-08 (the test day)
  log_random_4_22_to_5_08_pure.csv     random exposures on 2022-05-06 .. 2022-05-08
  user_features_pure.csv               every user of the logs and two more
  video_features_basic_pure.csv        every video of the logs and a few more

Structure: users like one of four taste groups of videos and click videos of their group more
often; each user has one to three sessions a day (an hour, a tab), each showing a few videos one
after the other. One request is written by hand (`HAND_CHECKED`) for the tests: user 7 on
2022-04-21 at 10:00 on tab 1 sees videos 1500, 35, 4210 and 35 again, clicks 35 the first time only;
the same hour on tab 0 they see video 88.

Only `random.Random(seed).random()` is used (its stream is fixed across Python versions) and rows
are written with the csv module, so every run writes the same bytes.
"""
import csv
import datetime
import os
import random

SEED = 2022
HERE = os.path.dirname(os.path.abspath(__file__))
LOG_HEADER = ("user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
              "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
              "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
              "is_rand", "tab")
USER_HEADER = ("user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
               "is_video_author", "follow_user_num", "follow_user_num_range", "fans_user_num",
               "fans_user_num_range", "friend_user_num", "friend_user_num_range", "register_days",
               "register_days_range", *(f"onehot_feat{i}" for i in range(18)))
VIDEO_HEADER = ("video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status",
                "video_duration", "server_width", "server_height", "music_id", "music_type", "tag")
# The README's ranges of the encrypted one-hot user features: onehot_feat<i> in 0..ONEHOT_MAX[i].
ONEHOT_MAX = (1, 6, 49, 1470, 14, 33, 2, 117, 453, 6, 4, 4, 1, 1, 1, 1, 1, 1)
STANDARD_DATES = {"log_standard_4_08_to_4_21_pure.csv": (20220419, 20220420, 20220421),
                  "log_standard_4_22_to_5_08_pure.csv": (20220506, 20220507, 20220508)}
RANDOM_FILE = "log_random_4_22_to_5_08_pure.csv"
RANDOM_DATES = (20220506, 20220507, 20220508)
NUM_USERS = 24
NUM_VIDEOS = 120
NUM_GROUPS = 4
TABS = (1, 1, 1, 1, 0, 4)  # Tab 1 (the featured feed) most of the time, as in the real logs.
HAND_CHECKED = {"user": 7, "date": 20220421, "hourmin": 1000,
                "tab1": ((1500, 0), (35, 1), (4210, 0), (35, 0)), "tab0": ((88, 0),)}
BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def time_ms(date: int, hourmin: int, second: int) -> int:
  day = datetime.datetime(date // 10000, date // 100 % 100, date % 100, hourmin // 100,
                          hourmin % 100, tzinfo=BEIJING)
  return int(day.timestamp()) * 1000 + second * 1000 + 137


def main(directory: str = HERE) -> None:
  rng = random.Random(SEED)
  pick = lambda seq: seq[int(rng.random() * len(seq))]  # noqa: E731
  # Raw ids with gaps, as after KuaiRand's re-indexing of a sample: users from 0, videos up to 7582.
  users = sorted({0, 7, *(int(rng.random() * 27285) for _ in range(NUM_USERS * 2))})[:NUM_USERS]
  if 7 not in users:
    users[1] = 7
  videos = sorted({1500, 35, 4210, 88, *(int(rng.random() * 7583) for _ in range(NUM_VIDEOS * 2))})
  videos = sorted(set(videos[:NUM_VIDEOS - 4]) | {1500, 35, 4210, 88})
  group = {v: int(rng.random() * NUM_GROUPS) for v in videos}
  taste = {u: int(rng.random() * NUM_GROUPS) for u in users}
  duration = {v: int(5000 + rng.random() * 120000) for v in videos}

  def exposure(user, video, date, hourmin, second, tab, click=None, is_rand=0):
    if click is None:
      p = 0.65 if group[video] == taste[user] else 0.12
      click = int(rng.random() < p)
    dur = duration[video]
    play = int(dur * (0.4 + rng.random()) if click else dur * 0.15 * rng.random())
    long_view = int(play >= min(dur, 18000))
    like = int(click and rng.random() < 0.1)
    return (user, video, date, hourmin, time_ms(date, hourmin, second), click, like, 0, 0, 0, 0,
            long_view, play, dur, 0, 0, 0, is_rand, tab)

  def sessions(user, date, count, length, is_rand=0):
    rows = []
    hours = sorted({8 + int(rng.random() * 15) for _ in range(count)})
    for hour in hours:
      tab = 1 if is_rand else pick(TABS)
      second = int(rng.random() * 600)
      for _ in range(length()):
        video = pick(videos)
        rows.append(exposure(user, video, date, hour * 100, second, tab, is_rand=is_rand))
        second += 5 + int(rng.random() * 60)
    return rows

  for name, dates in STANDARD_DATES.items():
    rows = []
    for user in users:
      for date in dates:
        rows += sessions(user, date, 1 + int(rng.random() * 3), lambda: 3 + int(rng.random() * 6))
    if 20220421 in dates:
      hand = HAND_CHECKED
      rows = [r for r in rows
              if not (r[0] == hand["user"] and r[2] == hand["date"] and r[3] == hand["hourmin"])]
      for i, (video, click) in enumerate(hand["tab1"]):
        rows.append(exposure(hand["user"], video, hand["date"], hand["hourmin"], 100 + 30 * i, 1,
                             click))
      for video, click in hand["tab0"]:
        rows.append(exposure(hand["user"], video, hand["date"], hand["hourmin"], 50, 0, click))
    write(os.path.join(directory, name), LOG_HEADER, sorted(rows, key=lambda r: (r[0], r[4])))

  rows = []
  for user in users:
    for date in RANDOM_DATES:
      rows += sessions(user, date, 1 + int(rng.random() * 2), lambda: 1 + int(rng.random() * 2),
                       is_rand=1)
  write(os.path.join(directory, RANDOM_FILE), LOG_HEADER, sorted(rows, key=lambda r: (r[0], r[4])))

  degrees = ("high_active", "full_active", "middle_active", "UNKNOWN")
  follow = ((0, "0"), (5, "(0,10]"), (30, "(10,50]"), (80, "(50,100]"), (120, "(100,150]"))
  fans = ((0, "0"), (4, "[1,10)"), (40, "[10,100)"), (312, "[100,1k)"))
  friends = ((0, "0"), (3, "[1,5)"), (12, "[5,30)"))
  register = ((20, "15-30"), (45, "31-60"), (200, "181-365"), (3624, "730+"))
  extra_users = (27283, 27284)
  rows = []
  for user in users + list(extra_users):
    onehot = [int(rng.random() * (m + 1)) for m in ONEHOT_MAX]
    if user == users[3]:
      onehot[4] = ""  # A missing value.
    rows.append((user, pick(degrees), int(rng.random() < 0.1), pick((0, 0, 0, 1, -124)),
                 int(rng.random() < 0.3), *pick(follow), *pick(fans), *pick(friends),
                 *pick(register), *onehot))
  write(os.path.join(directory, "user_features_pure.csv"), USER_HEADER, rows)

  rows = []
  upload_types = ("ShortImport", "LongImport", "Kmovie", "ShortCamera", "FollowShoot")
  for video in sorted(set(videos) | {7580, 7581, 7582}):
    g = group.get(video, 0)
    tag = str(g * 10 + 2) if rng.random() < 0.6 else f"{g * 10 + 2},{int(rng.random() * 60) + 1}"
    music_type = "" if video == videos[5] else f"{float(pick((4, 9, 9, 11)))}"
    rows.append((video, int(rng.random() * 8839734), "AD" if rng.random() < 0.05 else "NORMAL",
                 f"2022-0{1 + int(rng.random() * 4)}-{10 + int(rng.random() * 18)}",
                 pick(upload_types), "1.0" if rng.random() < 0.9 else "0.0",
                 f"{float(duration.get(video, 17200))}", "720.0", "1280.0",
                 int(rng.random() * 9e9), music_type, tag if video != videos[6] else ""))
  write(os.path.join(directory, "video_features_basic_pure.csv"), VIDEO_HEADER, rows)


def write(path: str, header, rows) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


if __name__ == "__main__":
  main()
