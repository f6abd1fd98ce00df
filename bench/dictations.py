"""Dictations and the replies they mean: the set the composer is scored on (tests/test_compose.py on the
text, `python -m tidings.bench.voice_bench` through speech).

Each entry is (what the wearer says, the reply that should be read back and sent). Indirect
dictation ("tell him …", "say …", "let her know …") becomes the reply itself, the addressee turned to
"you"; direct dictation stays as said, cleaned. No expected reply has a word the wearer did not say,
other than "you"/"your" for the person the reply goes to.
"""

DICTATIONS: list[tuple[str, str]] = [
    ("tell him I will be home at nine", "I will be home at nine."),
    ("say yes", "Yes."),
    ("say no thanks", "No thanks."),
    ("tell her I'm running ten minutes late", "I'm running ten minutes late."),
    ("let him know that the meeting moved to Thursday", "The meeting moved to Thursday."),
    ("tell Mom I'll pick up Lily at five thirty", "I'll pick up Lily at five thirty."),
    ("tell her she can borrow the car", "You can borrow the car."),
    ("tell him he doesn't need to bring anything", "You don't need to bring anything."),
    ("tell them I'm in", "I'm in."),
    ("reply sounds good", "Sounds good."),
    ("tell Sam to call me after work", "Call me after work."),
    ("tell her I'll pick her up at the station", "I'll pick you up at the station."),
    ("tell him his keys are on the kitchen table", "Your keys are on the kitchen table."),
    ("let her know I've got her charger", "I've got your charger."),
    ("tell him he's welcome to stay over", "You're welcome to stay over."),
    ("say that I can't make it tonight", "I can't make it tonight."),
    ("tell Priya the slides are done", "The slides are done."),
    ("answer with maybe next week", "Maybe next week."),
    ("tell her she always makes the best cake", "You always make the best cake."),
    ("tell him he wants the blue one", "You want the blue one."),
    ("please tell Tom I sent the report", "I sent the report."),
    ("text Dad I landed safely", "I landed safely."),
    ("tell the landlord someone will be home tomorrow morning", "Someone will be home tomorrow morning."),
    ("let them know we are on our way", "We are on our way."),
    ("tell her she's been a great help", "You've been a great help."),
    ("I'll be there in twenty minutes", "I'll be there in twenty minutes."),
    ("running late, start without me", "Running late, start without me."),
    ("um, I can do Tuesday", "I can do Tuesday."),
    ("yes please", "Yes please."),
    ("tell me about it", "Tell me about it."),
    ("say hi to your mum from me", "Say hi to your mum from me."),
    ("tell him thanks for dinner", "Thanks for dinner."),
    ("tell her I miss her", "I miss you."),
]
