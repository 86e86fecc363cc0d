"""Text-rendering prompts for the `ocr` reward, in the style of FlowGRPO's OCR set (yifan123/flow_grpo,
`dataset/ocr/*.txt`: a scene with a sign, label or screen that says "<short text>").

Prompts = templates x a vocabulary of short phrases (letters, digits and spaces only: no quotes, so each prompt
has exactly one quoted span, the target of `elborl.rewards.ocr`). Train and test are disjoint in their target
texts (compared as the reward normalises them: spaces removed, lower-cased) and deterministic for a seed.

Rows are {"prompt", "tag": "ocr", "text"}: prompt-only rows that `elborl.geneval_io` accepts beside GenEval
metadata (`PROMPT_ONLY_TAGS`) and GenEval's scoring skips; `prompts.source: ocr` writes them.
"""

from __future__ import annotations

import random

#: One `{text}` each; the text is always inside straight double quotes.
TEMPLATES: tuple[str, ...] = (
    'A wooden sign that says "{text}"',
    'A neon sign glowing in a dark alley that reads "{text}"',
    'A shop window with a hand-painted banner that says "{text}"',
    'A chalkboard menu outside a small cafe with the words "{text}" written in white chalk',
    'A highway billboard at sunset advertising "{text}" in bold letters',
    'A close-up of a coffee mug printed with the words "{text}"',
    'A birthday cake with "{text}" written in blue icing',
    'A vintage movie poster with the title "{text}" across the top',
    'A street sign on a busy corner that reads "{text}"',
    'A handwritten note on a yellow sticky note that says "{text}"',
    'A book cover with the title "{text}" in large serif letters',
    'A t-shirt on a hanger with "{text}" printed on the front',
    'A smartphone screen showing a notification that says "{text}"',
    'A glowing digital billboard in a futuristic city displaying "{text}"',
    'A graffiti mural on a brick wall spelling "{text}"',
    'A bakery storefront with a striped awning and a sign that says "{text}"',
    'A protest placard held up in a crowd that reads "{text}"',
    'A cardboard box with "{text}" written on it in black marker',
    'A license plate on a red sports car that reads "{text}"',
    'A greeting card on a table with "{text}" in gold script',
    'A wooden door with a brass plaque engraved "{text}"',
    'A sandy beach with "{text}" written in the sand',
    'A classroom whiteboard with "{text}" written in red marker',
    'A bottle of wine with a label that reads "{text}"',
    'A train station departure board showing "{text}"',
    'A road construction sign that warns "{text}"',
    'A laptop screen with a presentation slide titled "{text}"',
    'A vintage typewriter page with the words "{text}" typed on it',
    'A baseball cap embroidered with "{text}"',
    'A hot air balloon with "{text}" painted on its side',
    'A cereal box on a kitchen counter with the brand name "{text}"',
    'A museum exhibit placard titled "{text}"',
    'A pizza box with "{text}" printed on the lid',
    'A snowy mountain trail with a wooden marker that says "{text}"',
    'A lighthouse at dusk with a small sign at its door reading "{text}"',
    'A doormat in front of a blue house that says "{text}"',
    'A dramatic sky where fireworks spell out "{text}"',
    'A wedding invitation card with "{text}" in elegant calligraphy',
    'A spaceship control panel with a screen flashing "{text}"',
    'A medieval scroll unrolled on a desk with "{text}" written in ink',
    'A tote bag with "{text}" printed in large letters',
    'A farmers market stall with a chalk sign reading "{text}"',
)

#: Short phrases to render (1-4 words, letters, digits and spaces), each distinct after normalisation.
PHRASES: tuple[str, ...] = (
    "Open 24 Hours", "Fresh Bread", "Hello World", "No Parking", "Welcome Home", "Stay Curious",
    "Good Morning", "Happy Birthday", "Keep Out", "Free Coffee", "Dream Big", "Best Pizza in Town",
    "Exit Only", "Lost and Found", "Thank You", "Sale Today", "Closed on Sunday", "Be Kind",
    "Drive Slow", "Hot Soup", "Fresh Flowers", "Live Music Tonight", "Gone Fishing", "Books and Tea",
    "Enjoy the Ride", "Danger Zone", "Next Exit", "Wet Paint", "Silent Study", "Ice Cream",
    "Happy New Year", "Summer Vibes", "Game Over", "Level Up", "Coming Soon", "Grand Opening",
    "Mind the Gap", "Slow Down", "Think Green", "Save Water", "Love Wins", "Go Team",
    "Farm Fresh Eggs", "Organic Apples", "Local Honey", "Daily Specials", "Taco Tuesday",
    "Fish and Chips", "Pancake House", "Sunset Diner", "Moon Bakery", "Star Cinema", "Blue Lagoon",
    "Rocket Science", "Space Station", "Mission Control", "Launch Pad", "Zero Gravity", "Red Planet",
    "Ocean View", "Mountain Pass", "River Crossing", "Forest Trail", "Desert Road", "City Lights",
    "Night Market", "Flower Shop", "Pet Store", "Toy Store", "Barber Shop", "Shoe Repair",
    "Tea Garden", "Jazz Club", "Art Gallery", "Music Hall", "Dance Studio", "Yoga Class",
    "Gym Open", "Swim Lessons", "Bike Rental", "Boat Tours", "Ski Lodge", "Camp Site",
    "Stop", "Yield", "Push", "Pull", "Enter", "Exit", "Open", "Closed", "Welcome", "Hope",
    "Peace", "Joy", "Relax", "Breathe", "Smile", "Create", "Explore", "Imagine", "Believe", "Focus",
    "Room 101", "Gate 42", "Platform 9", "Route 66", "Apartment 3B", "Locker 17", "Aisle 5",
    "Table 12", "Floor 7", "Bus 23", "Flight 808", "Track 4", "Suite 250", "Lane 8",
    "Only 5 Dollars", "Half Price", "Buy One Get One", "Free Refills", "Cash Only", "Sold Out",
    "Now Hiring", "Ask Me", "Help Wanted", "Fragile", "Handle With Care", "This Side Up",
    "Top Secret", "Private Property", "Staff Only", "Quiet Please", "No Smoking", "No Dogs",
    "Beware of Cat", "Cat Nap", "Dog Park", "Bird Watching", "Horse Farm", "Goat Cheese",
    "Lemonade Stand", "Pumpkin Patch", "Apple Pie", "Cherry Jam", "Peach Tea", "Mango Juice",
    "Hot Chocolate", "Green Tea", "Black Coffee", "Fresh Milk", "Sweet Corn", "Spicy Noodles",
    "Golden Hour", "Silver Lining", "Crystal Cave", "Iron Bridge", "Stone Castle", "Glass House",
    "Paper Moon", "Velvet Room", "Copper Kettle", "Maple Street", "Oak Avenue", "Pine Road",
    "Cedar Lane", "Elm Court", "Willow Park", "Harbor Point", "Sunny Side", "Rainy Day",
    "Snow Day", "Windy Hill", "Thunder Road", "Storm Warning", "High Tide", "Low Bridge",
    "Falling Rocks", "Deer Crossing", "Bridge Out", "Road Closed", "Detour Ahead", "Dead End",
    "One Way", "Speed Limit 30", "School Zone", "Hospital", "Pharmacy", "Post Office",
    "Police", "Fire Station", "Library", "Museum", "Bakery", "Hotel", "Cafe", "Market",
    "Pizza", "Sushi", "Tacos", "Burgers", "Donuts", "Bagels", "Waffles", "Noodles",
    "Science Fair", "Math Club", "Chess Night", "Book Club", "Movie Night", "Trivia Night",
    "Karaoke", "Open Mic", "Poetry Slam", "Comedy Show", "Magic Show", "Circus",
    "Robot Repair", "Time Machine", "Secret Lab", "Dragon Lair", "Pirate Cove", "Treasure Map",
    "Wizard School", "Castle Gate", "Royal Garden", "Kings Road", "Queen Street", "Knight Watch",
    "Go Left", "Turn Right", "Keep Going", "Almost There", "You Are Here", "Start Here",
    "The End", "Chapter One", "Part Two", "Volume 3", "Episode 9", "Season 4",
    "Love You", "Miss You", "See You Soon", "Good Luck", "Well Done", "Congrats",
    "Just Married", "Its a Boy", "Its a Girl", "Happy Holidays", "Merry Christmas", "Trick or Treat",
)  # fmt: skip


def _key(text: str) -> str:
    return text.replace(" ", "").lower()


def _rows(phrases: list[str], n: int, rng: random.Random) -> list[dict]:
    """n rows cycling over the phrases; each phrase's k-th use takes a different template (prompts unique)."""
    if n > len(phrases) * len(TEMPLATES):
        raise ValueError(f"expected at most {len(phrases) * len(TEMPLATES)} prompts from {len(phrases)} phrases")
    order = rng.sample(phrases, len(phrases))
    offsets = [rng.randrange(len(TEMPLATES)) for _ in order]
    rows = []
    for i in range(n):
        j = i % len(order)
        template = TEMPLATES[(offsets[j] + i // len(order)) % len(TEMPLATES)]
        rows.append({"prompt": template.format(text=order[j]), "tag": "ocr", "text": order[j]})
    return rows


def ocr_prompt_sets(seed: int, n_train: int = 400, n_test: int = 100) -> tuple[list[dict], list[dict]]:
    """(train, test) OCR prompt rows {"prompt", "tag": "ocr", "text"}, disjoint in their (normalised) texts.

    The phrases are shuffled by the seed and split in proportion to n_train : n_test (each side gets at least
    one); each side's rows cycle over its phrases with varied templates, so prompts within a side are unique.

    Raises:
        ValueError: A negative count, or more prompts asked than a side's phrases x templates.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"expected n_train, n_test >= 0, found {n_train}, {n_test}")
    rng = random.Random(seed)
    phrases = rng.sample(PHRASES, len(PHRASES))
    n_test_phrases = 0 if n_test == 0 else round(len(phrases) * n_test / (n_train + n_test))
    n_test_phrases = min(max(n_test_phrases, 1 if n_test else 0), len(phrases) - (1 if n_train else 0))
    test_phrases, train_phrases = phrases[:n_test_phrases], phrases[n_test_phrases:]
    return _rows(train_phrases, n_train, rng), _rows(test_phrases, n_test, rng)
