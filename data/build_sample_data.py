"""Builds the bundled sample data (data/sample_train.jsonl, data/sample_eval.jsonl) in the original's custom format.

The rows are small question/answer pairs written for this project: a preferred answer that is right and says so, and
a dispreferred one that is wrong or evasive. They exist so that `--quick-test` and the tests run offline and so that
the tiny model's tokenizer has text to learn from. The output is deterministic; rerun after editing the tables:

    python data/build_sample_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = [
    ("France", "Paris", "Lyon"), ("Japan", "Tokyo", "Osaka"), ("Italy", "Rome", "Milan"),
    ("Spain", "Madrid", "Barcelona"), ("Germany", "Berlin", "Munich"), ("Canada", "Ottawa", "Toronto"),
    ("Australia", "Canberra", "Sydney"), ("Brazil", "Brasilia", "Rio de Janeiro"), ("Egypt", "Cairo", "Alexandria"),
    ("Kenya", "Nairobi", "Mombasa"), ("India", "New Delhi", "Mumbai"), ("Turkey", "Ankara", "Istanbul"),
    ("South Korea", "Seoul", "Busan"), ("Portugal", "Lisbon", "Porto"), ("Norway", "Oslo", "Bergen"),
    ("Peru", "Lima", "Cusco"), ("Vietnam", "Hanoi", "Ho Chi Minh City"), ("Morocco", "Rabat", "Casablanca"),
    ("Switzerland", "Bern", "Zurich"), ("New Zealand", "Wellington", "Auckland"), ("Chile", "Santiago", "Valparaiso"),
    ("Poland", "Warsaw", "Krakow"), ("Nigeria", "Abuja", "Lagos"), ("Argentina", "Buenos Aires", "Cordoba"),
    ("Greece", "Athens", "Thessaloniki"), ("Ireland", "Dublin", "Cork"), ("Mexico", "Mexico City", "Guadalajara"),
    ("Sweden", "Stockholm", "Gothenburg"), ("Thailand", "Bangkok", "Chiang Mai"), ("Austria", "Vienna", "Salzburg"),
]

FACTS = [
    ("Why is the sky blue?",
     "Sunlight scatters off air molecules, and blue light scatters far more than red, so the sky looks blue.",
     "The sky reflects the colour of the ocean."),
    ("What does a thermometer measure?", "A thermometer measures temperature.", "It measures how heavy things are."),
    ("How many days are in a leap year?", "A leap year has 366 days.", "Every year has exactly 365 days."),
    ("What gas do plants take in for photosynthesis?",
     "Plants take in carbon dioxide and release oxygen during photosynthesis.", "Plants breathe in oxygen only."),
    ("What is the boiling point of water at sea level in Celsius?",
     "Water boils at 100 degrees Celsius at sea level.", "Water boils at 50 degrees."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun.", "Mars is the closest one."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean.", "The Atlantic, I think."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders have six legs like insects."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au.", "It is Go."),
    ("What do bees make?", "Bees make honey and beeswax.", "Bees make milk."),
    ("How many continents are there?", "There are seven continents.", "There are four continents."),
    ("What is the freezing point of water in Fahrenheit?",
     "Water freezes at 32 degrees Fahrenheit.", "It freezes at 0 degrees Fahrenheit."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet.", "Charles Dickens wrote it."),
    ("What is the hardest natural material?", "Diamond is the hardest natural material.", "Gold is the hardest."),
    ("How many minutes are in an hour?", "An hour has sixty minutes.", "An hour has one hundred minutes."),
    ("What organ pumps blood through the body?", "The heart pumps blood through the body.", "The lungs pump blood."),
    ("What is the main language of Brazil?", "The main language of Brazil is Portuguese.", "Brazilians speak Spanish."),
    ("What causes the seasons on Earth?",
     "The tilt of the Earth's axis changes how directly sunlight hits each hemisphere, which causes the seasons.",
     "The Earth gets closer to the Sun in summer."),
    ("What is the speed of light, roughly?",
     "Light travels at about 300,000 kilometres per second.", "Light is about as fast as sound."),
    ("What is the square root of 81?", "The square root of 81 is 9.", "The square root of 81 is 8."),
    ("How many sides does a hexagon have?", "A hexagon has six sides.", "A hexagon has eight sides."),
    ("What is the smallest prime number?", "The smallest prime number is 2.", "The smallest prime is 1."),
    ("Which animal is known as the king of the jungle?", "The lion is called the king of the jungle.",
     "The elephant is the king."),
    ("What vitamin does sunlight help the body make?", "Sunlight helps the body make vitamin D.",
     "Sunlight gives you vitamin C."),
    ("What is H2O?", "H2O is the chemical formula for water.", "H2O is a kind of salt."),
    ("What instrument has 88 keys?", "A standard piano has 88 keys.", "A guitar has 88 keys."),
    ("Which metal is liquid at room temperature?", "Mercury is a metal that is liquid at room temperature.",
     "Iron is liquid at room temperature."),
    ("What is the tallest mountain above sea level?", "Mount Everest is the tallest mountain above sea level.",
     "Mont Blanc is the tallest."),
    ("How many bones are in the adult human body?", "An adult human body has 206 bones.",
     "Adults have about 50 bones."),
    ("What does DNA stand for?", "DNA stands for deoxyribonucleic acid.", "DNA stands for digital network access."),
]

YES_NO = [
    ("Is the Earth round?", True, "the Earth is roughly a sphere"),
    ("Is ice colder than boiling water?", True,
     "ice is at or below zero degrees while boiling water is at one hundred"),
    ("Can fish breathe underwater?", True, "fish take oxygen from water through their gills"),
    ("Is the Moon a planet?", False, "the Moon is a natural satellite of the Earth"),
    ("Do penguins live at the North Pole?", False, "wild penguins live in the southern hemisphere"),
    ("Is 17 a prime number?", True, "17 has no divisors other than 1 and itself"),
    ("Is 21 a prime number?", False, "21 equals 3 times 7"),
    ("Is a tomato a fruit in botany?", True, "a tomato develops from the flower and holds seeds"),
    ("Is sound faster than light?", False, "light is far faster than sound"),
    ("Do plants need sunlight to grow?", True, "most plants need light for photosynthesis"),
    ("Is Python a programming language?", True, "Python is a widely used programming language"),
    ("Is a whale a fish?", False, "a whale is a mammal that breathes air"),
    ("Does water expand when it freezes?", True, "ice is less dense than liquid water"),
    ("Is the Sahara the largest desert overall?", False, "Antarctica is larger if cold deserts count"),
    ("Is zero an even number?", True, "zero is divisible by two"),
    ("Can humans see ultraviolet light?", False, "ultraviolet light is outside the visible range"),
    ("Is copper a good conductor of electricity?", True, "copper is used in most electrical wiring"),
    ("Is the Pacific Ocean salty?", True, "sea water contains dissolved salts"),
    ("Do bats lay eggs?", False, "bats are mammals that give birth to live young"),
    ("Is 100 divisible by 8?", False, "100 divided by 8 leaves a remainder of 4"),
]

KOREAN = [
    ("프랑스의 수도는 어디인가요?", "프랑스의 수도는 파리입니다. 정확한 답이에요.", "잘 모르겠어요."),
    ("일주일은 며칠인가요?", "일주일은 7일입니다. 맞아요.", "일주일은 10일이에요."),
    ("물은 몇 도에서 끓나요?", "물은 해수면에서 섭씨 100도에서 끓습니다.", "모르겠어요, 아마 50도?"),
    ("한국의 수도는 어디인가요?", "한국의 수도는 서울입니다. 정확해요.", "부산이 수도예요."),
    ("2 더하기 3은 얼마인가요?", "2 더하기 3은 5입니다. 맞아요.", "2 더하기 3은 6이에요."),
    ("태양계에서 가장 큰 행성은 무엇인가요?", "태양계에서 가장 큰 행성은 목성입니다.", "지구가 가장 커요."),
    ("하루는 몇 시간인가요?", "하루는 24시간입니다. 정확해요.", "하루는 12시간이에요."),
    ("사과는 과일인가요?", "네, 사과는 과일입니다. 맞아요.", "아니요, 사과는 채소예요."),
    ("고래는 포유류인가요?", "네, 고래는 포유류입니다. 정확한 설명이에요.", "고래는 물고기예요."),
    ("빛과 소리 중 어느 것이 더 빠른가요?", "빛이 소리보다 훨씬 빠릅니다.", "소리가 더 빨라요."),
    ("1년은 몇 달인가요?", "1년은 12달입니다. 맞아요.", "1년은 10달이에요."),
    ("삼각형의 변은 몇 개인가요?", "삼각형에는 변이 3개 있습니다.", "삼각형의 변은 4개예요."),
    ("얼음은 물에 뜨나요?", "네, 얼음은 물보다 밀도가 낮아서 물에 뜹니다.", "얼음은 가라앉아요."),
    ("지구는 태양 주위를 도나요?", "네, 지구는 약 1년에 한 번 태양 주위를 돕니다. 정확해요.", "태양이 지구를 돌아요."),
    ("10 곱하기 10은 얼마인가요?", "10 곱하기 10은 100입니다. 맞아요.", "10 곱하기 10은 20이에요."),
    ("식물은 무엇으로 광합성을 하나요?", "식물은 햇빛, 물, 이산화탄소로 광합성을 합니다.", "식물은 광합성을 안 해요."),
    ("일본의 수도는 어디인가요?", "일본의 수도는 도쿄입니다. 완벽한 답이에요.", "오사카예요."),
    ("거미의 다리는 몇 개인가요?", "거미의 다리는 8개입니다.", "거미 다리는 6개예요."),
    ("바다는 왜 짠가요?", "바닷물에는 육지에서 흘러온 염분이 녹아 있어서 짭니다.", "잘 모르겠어요."),
    ("가장 작은 소수는 무엇인가요?", "가장 작은 소수는 2입니다. 맞아요.", "1이 가장 작은 소수예요."),
    ("영어로 '감사합니다'는 무엇인가요?", "영어로 'Thank you'입니다. 정확해요.", "'Hello'라고 해요."),
    ("무지개는 몇 가지 색인가요?", "무지개는 보통 일곱 가지 색으로 표현합니다.", "무지개는 세 가지 색이에요."),
    ("달은 스스로 빛을 내나요?", "아니요, 달은 햇빛을 반사해서 빛나 보입니다.", "네, 달은 스스로 빛나요."),
    ("심장은 어떤 일을 하나요?", "심장은 온몸으로 혈액을 보냅니다. 좋아요, 정확한 질문이에요.",
     "심장은 음식을 소화해요."),
    ("100의 절반은 얼마인가요?", "100의 절반은 50입니다. 맞아요.", "100의 절반은 40이에요."),
]

UNITS = [
    ("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("hours", "minutes", 60),
    ("minutes", "seconds", 60), ("kilograms", "grams", 1000), ("litres", "millilitres", 1000),
    ("days", "hours", 24), ("weeks", "days", 7),
]

REWRITES = [
    "the meeting is moved to friday because the room is booked",
    "please send me the report before noon tomorrow",
    "the train was late so we missed the start of the film",
    "our team finished the project two days early",
    "the new library opens next month near the park",
    "it rained all weekend so the picnic was cancelled",
    "the bakery on the corner sells fresh bread every morning",
    "she learned to play the guitar in one summer",
    "the museum is free for students on wednesdays",
    "we planted tomatoes and basil in the garden",
    "the software update fixes a bug in the login page",
    "he walks his dog along the river every evening",
]


def arithmetic_rows(rng: random.Random, count: int) -> list[dict]:
    rows = []
    for _ in range(count):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        wrong = value + rng.choice([-3, -2, -1, 1, 2, 10])
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        prompt = rng.choice([f"What is {a} {op} {b}?", f"Compute {a} {word} {b}.", f"Calculate {a} {op} {b}."])
        rows.append({
            "prompt": prompt,
            "chosen": f"{a} {op} {b} = {value}. That is the correct result.",
            "rejected": f"I think it is {wrong}, but I am not sure.",
        })
    return rows


def capital_rows(rng: random.Random) -> list[dict]:
    rows = []
    for country, capital, other in CAPITALS:
        prompt = rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?",
                             f"Name the capital city of {country}."])
        rows.append({
            "prompt": prompt,
            "chosen": f"The capital of {country} is {capital}. Yes, that is correct.",
            "rejected": f"The capital of {country} is {other}.",
        })
    return rows


def yes_no_rows() -> list[dict]:
    rows = []
    for question, answer, reason in YES_NO:
        right, wrong = ("Yes", "No") if answer else ("No", "Yes")
        rows.append({
            "prompt": question,
            "chosen": f"{right}, {reason}.",
            "rejected": f"{wrong}. I don't really know why.",
        })
    return rows


def unit_rows(rng: random.Random, count: int) -> list[dict]:
    rows = []
    for _ in range(count):
        big, small, factor = rng.choice(UNITS)
        amount = rng.randint(2, 12)
        rows.append({
            "prompt": f"How many {small} are in {amount} {big}?",
            "chosen": f"There are {amount * factor} {small} in {amount} {big}, because one is {factor} {small}.",
            "rejected": f"There are {amount + factor} {small}.",
        })
    return rows


def rewrite_rows() -> list[dict]:
    rows = []
    for sentence in REWRITES:
        fixed = sentence[0].upper() + sentence[1:] + "."
        rows.append({
            "prompt": f"Rewrite this sentence with correct capitalisation and punctuation: {sentence}",
            "chosen": fixed,
            "rejected": sentence.upper(),
        })
        words = sentence.split()
        rows.append({
            "prompt": f"Summarise in five words or fewer: {sentence}",
            "chosen": " ".join(words[:5]).capitalize() + ".",
            "rejected": f"This sentence says that {sentence}, which is a long way of repeating it.",
        })
    return rows


def build_rows() -> list[dict]:
    rng = random.Random(20261124)
    rows = (arithmetic_rows(rng, 90) + capital_rows(rng) + yes_no_rows() + unit_rows(rng, 45) + rewrite_rows()
            + [{"prompt": q, "chosen": c, "rejected": r} for q, c, r in FACTS]
            + [{"prompt": q, "chosen": c, "rejected": r} for q, c, r in KOREAN])
    unique = list({row["prompt"]: row for row in rows}.values())
    rng.shuffle(unique)
    return unique


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rows = build_rows()
    eval_count = len(rows) // 8
    here = Path(__file__).resolve().parent
    write_jsonl(here / "sample_eval.jsonl", rows[:eval_count])
    write_jsonl(here / "sample_train.jsonl", rows[eval_count:])
    print(f"wrote {len(rows) - eval_count} train rows and {eval_count} eval rows to {here}")


if __name__ == "__main__":
    main()
