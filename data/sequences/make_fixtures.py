"""Writes the four sequence fixtures (README.md beside this file) in their public layouts.

    python data/sequences/make_fixtures.py

Standard library only; the output is the same on every run. Each table below is one user's
interactions in time order; the README counts what the 5-core filter keeps.
"""
import datetime
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def _write(name: str, filename: str, lines) -> None:
  os.makedirs(os.path.join(HERE, name), exist_ok=True)
  with open(os.path.join(HERE, name, filename), "w", newline="\n") as f:
    f.writelines(line + "\n" for line in lines)


def _seconds(text: str) -> int:
  moment = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)
  return int(moment.timestamp())


# --------------------------------------------------------------------------- Amazon Books
# ASINs: A..H the core books, R a book with 3 reviews (dropped by the 5-core).
ASIN = {"A": "000100039X", "B": "0002005018", "C": "0002007770", "D": "0002051850",
        "E": "0002113570", "F": "0002117088", "G": "0002219417", "H": "000222383X",
        "R": "0002226618"}
# reviewerID -> [(book, day)] in time order. A3HXJ7VQ2ZQ4N7 has 4 reviews (dropped).
BOOKS = {
    "A1RJYHDQ4YA2TB": [("F", "2011-12-30"), ("A", "2012-01-05"), ("B", "2012-01-05"),
                       ("C", "2012-02-10"), ("D", "2012-03-01"), ("E", "2012-03-01"),
                       ("A", "2013-06-02")],
    "A2SUAM1J3GNN3B": [("B", "2010-02-01"), ("C", "2010-03-03"), ("D", "2010-04-02"),
                       ("E", "2010-05-02"), ("F", "2010-06-01"), ("G", "2010-07-01")],
    "A3SGXH7AUHU8GW": [("C", "2010-02-02"), ("D", "2010-03-04"), ("E", "2010-04-03"),
                       ("F", "2010-05-03"), ("G", "2010-06-02"), ("H", "2010-07-02")],
    "AVCGYZL8FQQTD": [("D", "2010-02-03"), ("R", "2010-02-20"), ("E", "2010-03-05"),
                      ("F", "2010-04-04"), ("G", "2010-05-04"), ("H", "2010-06-03"),
                      ("A", "2010-07-03")],
    "A1NHB2VC68YQNM": [("E", "2010-02-04"), ("F", "2010-03-06"), ("G", "2010-04-05"),
                       ("H", "2010-05-05"), ("A", "2010-06-04"), ("B", "2010-07-04")],
    "A3KF4IP2MUS8QQ": [("F", "2010-02-05"), ("G", "2010-03-07"), ("H", "2010-04-06"),
                       ("A", "2010-05-06"), ("B", "2010-06-05"), ("C", "2010-07-05")],
    "A2ZEMAKGZFI1DY": [("G", "2010-02-06"), ("H", "2010-03-08"), ("A", "2010-04-07"),
                       ("B", "2010-05-07"), ("C", "2010-06-06"), ("D", "2010-07-06")],
    "A1K1JW1C5CUSUZ": [("H", "2010-02-07"), ("A", "2010-03-09"), ("B", "2010-04-08"),
                       ("C", "2010-05-08"), ("D", "2010-06-07"), ("E", "2010-07-07")],
    "A3O2HDUKZQB6F6": [("A", "2010-02-08"), ("B", "2010-03-10"), ("C", "2010-04-09"),
                       ("R", "2010-04-20"), ("D", "2010-05-09"), ("E", "2010-06-08"),
                       ("F", "2010-07-08")],
    "A14OJS0VWMOSWO": [("B", "2010-02-09"), ("C", "2010-03-11"), ("D", "2010-04-10"),
                       ("E", "2010-05-10"), ("F", "2010-06-09"), ("G", "2010-07-09"),
                       ("R", "2010-08-01")],
    "A3HXJ7VQ2ZQ4N7": [("A", "2011-01-10"), ("B", "2011-01-11"), ("C", "2011-01-12"),
                       ("D", "2011-01-13")],
}
NAMES = ["J. McDonald", "Amazon Customer", "Bookworm", "K. Lee", "Mary", "R. Smith", "Tom",
         "avid reader", "S. Gupta", "Anne", "Paul W."]
TEXTS = [("Could not put it down.", "Great read", 5.0), ("Slow start, good ending.", "Good", 4.0),
         ("Not for me.", "Meh", 2.0), ("A classic.", "Loved it", 5.0),
         ("Well written but long.", "Okay", 3.0)]


def books_lines():
  rows = []
  for r, (reviewer, reviews) in enumerate(BOOKS.items()):
    for book, day in reviews:
      rows.append((ASIN[book], _seconds(day), r, reviewer, day))
  rows.sort()  # the real file is grouped by asin
  for n, (asin, seconds, r, reviewer, day) in enumerate(rows):
    text, summary, overall = TEXTS[n % len(TEXTS)]
    date = datetime.date.fromisoformat(day)
    review = {"reviewerID": reviewer, "asin": asin, "reviewerName": NAMES[r],
              "helpful": [n % 3, n % 3 + n % 2], "reviewText": text, "overall": overall,
              "summary": summary, "unixReviewTime": seconds,
              "reviewTime": f"{date.month:02d} {date.day}, {date.year}"}
    yield json.dumps(review)


# --------------------------------------------------------------------------- Gowalla
# Location id -> (latitude, longitude). P1..P7 the core places, T a place with 5 check-ins (one of
# them by user 27, dropped), R a place with 2 check-ins (dropped).
PLACES = {"P1": (22847, "30.2691029532", "-97.7493953705"),
          "P2": (420315, "30.2557309927", "-97.7633857727"),
          "P3": (316637, "30.2634181234", "-97.7575966669"),
          "P4": (16516, "30.2742918584", "-97.7405226231"),
          "P5": (5535878, "40.7484450000", "-73.9856550000"),
          "P6": (15372, "40.7587402670", "-73.9786323905"),
          "P7": (21714, "37.7749295000", "-122.4194155000"),
          "T": (1500177, "30.2669444000", "-97.7427778000"),
          "R": (9246, "59.3326510000", "18.0649000000")}
# user -> [(place, UTC time)] in time order (the file lists each user newest first). User 0
# checks in at P2 and P1 in the same second: P2 is written first, so first in the sequence.
GOWALLA = {
    0: [("P1", "2010-06-01T08:00:00"), ("P2", "2010-06-03T12:30:00"),
        ("P1", "2010-06-03T12:30:00"), ("P3", "2010-06-05T18:45:10"),
        ("T", "2010-06-06T09:00:00"), ("P4", "2010-06-07T20:10:00")],
    1: [("P2", "2010-05-02T10:00:00"), ("P3", "2010-05-02T11:00:00"),
        ("P4", "2010-05-03T10:00:00"), ("P5", "2010-05-04T10:00:00"),
        ("T", "2010-05-05T10:00:00"), ("P2", "2010-05-06T10:00:00")],
    2: [("P3", "2010-07-01T10:00:00"), ("P4", "2010-07-02T10:00:00"),
        ("P5", "2010-07-03T10:00:00"), ("P6", "2010-07-04T10:00:00"),
        ("T", "2010-07-05T10:00:00"), ("P7", "2010-07-06T10:00:00"),
        ("P3", "2010-07-07T10:00:00")],
    4: [("P4", "2010-08-01T10:00:00"), ("P5", "2010-08-02T10:00:00"),
        ("P6", "2010-08-03T10:00:00"), ("P7", "2010-08-04T10:00:00"),
        ("P1", "2010-08-05T10:00:00"), ("R", "2010-08-06T10:00:00")],
    7: [("P5", "2010-09-01T10:00:00"), ("P6", "2010-09-02T10:00:00"),
        ("P7", "2010-09-03T10:00:00"), ("P1", "2010-09-04T10:00:00"),
        ("P2", "2010-09-05T10:00:00"), ("R", "2010-09-06T10:00:00"),
        ("P5", "2010-09-07T10:00:00")],
    9: [("P6", "2010-04-01T10:00:00"), ("P7", "2010-04-02T10:00:00"),
        ("P1", "2010-04-03T10:00:00"), ("P2", "2010-04-04T10:00:00"),
        ("P3", "2010-04-05T10:00:00")],
    11: [("P7", "2010-03-01T10:00:00"), ("P1", "2010-03-02T10:00:00"),
         ("P2", "2010-03-03T10:00:00"), ("P3", "2010-03-04T10:00:00"),
         ("P4", "2010-03-05T10:00:00"), ("P7", "2010-03-06T10:00:00")],
    14: [("P1", "2010-02-01T10:00:00"), ("P1", "2010-02-01T18:00:00"),
         ("P1", "2010-02-02T10:00:00"), ("P2", "2010-02-03T10:00:00"),
         ("P5", "2010-02-04T10:00:00"), ("P6", "2010-02-05T10:00:00")],
    19: [("T", "2010-10-01T10:00:00"), ("P1", "2010-10-02T10:00:00"),
         ("P2", "2010-10-03T10:00:00"), ("P3", "2010-10-04T10:00:00"),
         ("P4", "2010-10-05T10:00:00")],
    22: [("P2", "2010-10-10T10:00:00"), ("P4", "2010-10-11T10:00:00"),
         ("P6", "2010-10-12T10:00:00"), ("P1", "2010-10-13T10:00:00"),
         ("P3", "2010-10-14T10:00:00")],
    27: [("T", "2010-10-15T10:00:00"), ("P5", "2010-10-16T10:00:00"),
         ("P6", "2010-10-17T10:00:00"), ("P7", "2010-10-18T10:00:00")],
}


def gowalla_lines():
  for user, checkins in GOWALLA.items():
    # Newest first; same-second check-ins stay in the table's order (user 0: P2, then P1).
    newest_first = sorted(checkins, key=lambda c: c[1], reverse=True)
    for place, time in newest_first:
      location, latitude, longitude = PLACES[place]
      yield f"{user}\t{time}Z\t{latitude}\t{longitude}\t{location}"


# --------------------------------------------------------------------------- RetailRocket
ITEMS = {"I1": 355908, "I2": 248676, "I3": 318965, "I4": 253185, "I5": 367447, "I6": 22556,
         "I7": 443030, "P": 5206}
START_MS = _seconds("2015-06-01T00:00:00") * 1000
# visitorid -> [(event, item, transactionid)] in time order, one event every 7 minutes per
# visitor from its own start. P has 4 views (dropped) plus cart and transaction events;
# visitor 1150086 has 4 views (dropped) plus 3 other events.
RETAILROCKET = {
    257597: ["I1", "I2", "I3", "I4", "I5"],
    992329: ["I2", "I3", ("addtocart", "I2"), "I4", ("transaction", "I2", 4000), "I5", "I6"],
    111016: ["I3", "I4", "I5", "I6", "I7", "I3"],
    483717: ["I4", "I5", "P", "I6", "I7", "I1"],
    951259: ["I5", "P", "I6", "I7", "I1", "I2"],
    972639: ["I6", "I7", "P", ("addtocart", "P"), "I1", "I2", "I3"],
    810725: ["I7", "P", ("addtocart", "P"), ("transaction", "P", 9811), "I1", "I2", "I3", "I4"],
    794181: ["I1", "I3", "I5", "I7", "I2"],
    824915: ["I2", "I4", "I6", "I1", "I5"],
    339335: ["I1", "I1", "I2", "I6", "I7"],
    176721: ["I3", "I5", "I7", "I4", "I6"],
    1150086: ["I1", ("transaction", "I1", 12040), "I2", ("transaction", "I2", 12041), "I3",
              ("addtocart", "I3"), "I4"],
}
# Visitor 794181 views I3 and I5 in the same millisecond; I3 is written first.
TIE = (794181, ("I3", "I5"))


def retailrocket_lines():
  rows = []
  for v, (visitor, events) in enumerate(RETAILROCKET.items()):
    start = START_MS + v * 86_400_000 + v * 3_601_234
    for n, event in enumerate(events):
      event = ("view", event) if isinstance(event, str) else event
      milliseconds = start + n * 420_000 + (n * 7919) % 1000
      if (visitor, event[1]) == (TIE[0], TIE[1][1]):
        milliseconds = rows[-1][0]  # the same millisecond as the view before it (I3)
      transaction = str(event[2]) if len(event) > 2 else ""
      rows.append((milliseconds, visitor, event[0], ITEMS[event[1]], transaction))
  # The real file is in no particular order.
  random.Random(2015).shuffle(rows)
  first, second = (i for i, row in enumerate(rows)
                   if row[1] == TIE[0] and row[3] in (ITEMS[TIE[1][0]], ITEMS[TIE[1][1]]))
  if rows[first][3] != ITEMS[TIE[1][0]]:
    rows[first], rows[second] = rows[second], rows[first]
  yield "timestamp,visitorid,event,itemid,transactionid"
  for milliseconds, visitor, event, item, transaction in rows:
    yield f"{milliseconds},{visitor},{event},{item},{transaction}"


# --------------------------------------------------------------------------- Taobao
# item -> (item_id, category_id): I1 and I5 share a category; Q has 4 pv (dropped) and 3 other
# behaviours.
GOODS = {"I1": (2268318, 2520377), "I2": (2333346, 2520771), "I3": (2576651, 149192),
         "I4": (3830808, 4181361), "I5": (4365585, 2520377), "I6": (4606018, 2735466),
         "I7": (230380, 411153), "Q": (3827899, 2920476)}
# user -> [(behaviour, item, Beijing time)] in time order; user 1010 has 4 pv (dropped).
TAOBAO = {
    1: [("pv", "I1", "2017-11-25 00:30:00"), ("pv", "I2", "2017-11-25 09:10:00"),
        ("buy", "I1", "2017-11-25 09:20:00"), ("pv", "I3", "2017-11-25 23:00:00"),
        ("fav", "I3", "2017-11-26 08:00:00"), ("pv", "I4", "2017-11-27 10:00:00"),
        ("pv", "I5", "2017-12-03 21:00:00")],
    100: [("pv", "I2", "2017-11-26 10:00:00"), ("pv", "I3", "2017-11-26 11:00:00"),
          ("pv", "I4", "2017-11-27 10:00:00"), ("pv", "I5", "2017-11-28 10:00:00"),
          ("pv", "I6", "2017-11-29 10:00:00")],
    1000: [("pv", "I3", "2017-11-25 10:00:00"), ("pv", "I4", "2017-11-25 10:05:00"),
           ("pv", "I5", "2017-11-25 10:10:00"), ("cart", "I5", "2017-11-25 10:11:00"),
           ("pv", "I6", "2017-11-26 10:00:00"), ("pv", "I7", "2017-11-27 10:00:00")],
    1001: [("pv", "I4", "2017-11-26 10:00:00"), ("pv", "I5", "2017-11-26 12:00:00"),
           ("pv", "Q", "2017-11-27 10:00:00"), ("pv", "I6", "2017-11-28 10:00:00"),
           ("pv", "I7", "2017-11-29 10:00:00"), ("pv", "I1", "2017-11-30 10:00:00")],
    1002: [("pv", "I5", "2017-11-27 10:00:00"), ("pv", "I6", "2017-11-27 11:00:00"),
           ("pv", "Q", "2017-11-27 12:00:00"), ("buy", "Q", "2017-11-27 12:30:00"),
           ("pv", "I7", "2017-11-28 10:00:00"), ("pv", "I1", "2017-11-29 10:00:00"),
           ("pv", "I2", "2017-11-30 10:00:00")],
    1003: [("pv", "I6", "2017-11-28 10:00:00"), ("pv", "I7", "2017-11-28 11:00:00"),
           ("pv", "Q", "2017-11-28 12:00:00"), ("cart", "Q", "2017-11-28 12:05:00"),
           ("pv", "I1", "2017-11-29 10:00:00"), ("pv", "I2", "2017-11-30 10:00:00"),
           ("pv", "I3", "2017-12-01 10:00:00")],
    1004: [("pv", "I7", "2017-11-29 10:00:00"), ("pv", "Q", "2017-11-29 11:00:00"),
           ("fav", "Q", "2017-11-29 11:01:00"), ("pv", "I1", "2017-11-30 10:00:00"),
           ("pv", "I2", "2017-12-01 10:00:00"), ("pv", "I3", "2017-12-02 10:00:00"),
           ("pv", "I4", "2017-12-03 10:00:00")],
    # I5 and I7 at the same second: I5 is written first, so first in the sequence.
    1005: [("pv", "I1", "2017-11-25 08:00:00"), ("pv", "I3", "2017-11-25 09:00:00"),
           ("pv", "I5", "2017-11-26 09:00:00"), ("pv", "I7", "2017-11-26 09:00:00"),
           ("pv", "I2", "2017-11-27 09:00:00"), ("pv", "I1", "2017-11-28 09:00:00")],
    1006: [("pv", "I2", "2017-11-30 10:00:00"), ("pv", "I4", "2017-11-30 11:00:00"),
           ("pv", "I6", "2017-12-01 10:00:00"), ("pv", "I1", "2017-12-01 11:00:00"),
           ("pv", "I3", "2017-12-02 10:00:00")],
    1007: [("pv", "I3", "2017-11-25 12:00:00"), ("pv", "I5", "2017-11-26 12:00:00"),
           ("pv", "I7", "2017-11-27 12:00:00"), ("pv", "I2", "2017-11-28 12:00:00"),
           ("pv", "I4", "2017-11-29 12:00:00")],
    1008: [("pv", "I4", "2017-12-01 12:00:00"), ("pv", "I6", "2017-12-01 13:00:00"),
           ("pv", "I1", "2017-12-02 12:00:00"), ("pv", "I3", "2017-12-02 13:00:00"),
           ("pv", "I5", "2017-12-03 12:00:00")],
    1009: [("pv", "I5", "2017-11-26 20:00:00"), ("pv", "I7", "2017-11-27 20:00:00"),
           ("pv", "I2", "2017-11-28 20:00:00"), ("pv", "I4", "2017-11-29 20:00:00"),
           ("pv", "I6", "2017-11-30 20:00:00")],
    1010: [("pv", "I1", "2017-11-30 09:00:00"), ("buy", "I1", "2017-11-30 09:30:00"),
           ("pv", "I2", "2017-11-30 10:00:00"), ("buy", "I2", "2017-11-30 10:30:00"),
           ("pv", "I6", "2017-12-01 09:00:00"), ("cart", "I6", "2017-12-01 09:10:00"),
           ("pv", "I7", "2017-12-02 09:00:00")],
}
# The file lists users in id order and each user's rows mostly in time order; user 100's I3 row
# is written before its I2 row.
OUT_OF_ORDER = (100, 0)


def taobao_lines():
  for user, rows in TAOBAO.items():
    rows = list(rows)
    if user == OUT_OF_ORDER[0]:
      i = OUT_OF_ORDER[1]
      rows[i], rows[i + 1] = rows[i + 1], rows[i]
    for behaviour, good, beijing in rows:
      item, category = GOODS[good]
      seconds = _seconds(beijing.replace(" ", "T")) - 8 * 3600
      yield f"{user},{item},{category},{behaviour},{seconds}"


if __name__ == "__main__":
  _write("books", "reviews_Books_5.json", books_lines())
  _write("gowalla", "loc-gowalla_totalCheckins.txt", gowalla_lines())
  _write("retailrocket", "events.csv", retailrocket_lines())
  _write("taobao", "UserBehavior.csv", taobao_lines())
