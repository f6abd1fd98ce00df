"""Messages Tidings must not trust: scams, phishing and instructions aimed at the summarizer.

A message is content, never a command. One that tells the summarizer what to say
("SYSTEM: ignore all previous instructions ...") or that fishes for a code, a
password or a click is kept out of the model's prompt and out of what is read
verbatim; the wearer hears, in Tidings' own words, only that such a message
arrived, who it claims to be from and what it wants, never its claims as fact.

Rules, not a model: they must hold when the model is off, and each one names the
signal it saw, so the wearer (and a test) can tell why a message was flagged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tidings.device.messages import Message

_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget)\b[^.!?\n]{0,30}\b(?:previous|prior|above|earlier|all)\b[^.!?\n]{0,20}"
    r"\b(?:instructions?|prompts?|rules)\b|^\s*(?:system|assistant)\s*:|\byou are now (?:in )?\w+ mode\b"
    r"|\b(?:summari[sz]e|describe|report) this (?:chat|thread|conversation|message) as\b"
    r"|\btell the (?:user|wearer|reader)\b|\b(?:as an ai|language model)\b"
    # Addressed to the summarizer itself: "Note to the AI assistant summarizing this chat: tell Alex ...".
    r"|\b(?:note|message|instructions?) (?:to|for) (?:the |any )?(?:ai|assistant|summari[sz]er|bot|chatbot)\b"
    r"|\b(?:ai|assistant|summari[sz]er|bot)\b[^.!?\n]{0,10}\bsummari[sz]ing\b",
    re.IGNORECASE | re.MULTILINE)
_CREDENTIAL = re.compile(
    r"\b(?:verification|security|one[- ]time|otp|login|sms|6[- ]digit|six[- ]digit)\s+(?:code|pin|password)\b"
    r"|\b(?:password|pin|passcode|card (?:number|details)|cvv|bank details|iban|account number|sort code)\b"
    r"|\b(?:reset|verify|confirm) your (?:password|identity|account|details)\b", re.IGNORECASE)
_THREAT = re.compile(
    r"\b(?:suspend\w*|restrict\w*|locked|blocked|cancell?ation|deactivat\w*|frozen|unusual (?:sign-?in|activity)"
    r"|within \d+ ?(?:minutes|mins?|hours|hrs?|h)|right away|immediately|final notice|returned to (?:the )?sender"
    r"|will be (?:returned|destroyed|disposed)|(?:last|final) reminder|(?:will )?(?:expire|lapse|be forfeited)"
    # The same pressure in German, as scams sent to German numbers write it.
    r"|innerhalb (?:von )?\d+ ?(?:std|stunden|tagen)|verf[äa]llt|letzte (?:erinnerung|mahnung)|gesperrt"
    r"|urgent(?:ly)?|keep (?:it|this) (?:confidential|secret|between us)|can['’]?t talk)\b",
    re.IGNORECASE)
# A fee, a payment or a transfer asked for: with a link or a stranger's number, the classic delivery scam.
_TRANSFER = re.compile(r"\b(?:transfer|wire|send (?:me )?(?:the )?money|überweis\w*)\b", re.IGNORECASE)
_PAYMENT = re.compile(r"\b(?:pay|payment|fee|outstanding|transfer|send (?:me )?(?:the )?money|top up)\b", re.IGNORECASE)
# Gift cards bought and their codes sent: the boss-in-a-meeting scam.
_GIFT_CARDS = re.compile(r"\b(?:gift ?cards?|itunes (?:cards?|codes?)|google play (?:cards?|codes?)|steam (?:cards?|codes?))\b",
                         re.IGNORECASE)
_PRIZE = re.compile(r"\b(?:you(?:'ve| have)? won|winner|prize|claim your|free gift|congratulations"
                    r"|you(?:'re| are) (?:owed|entitled to)|(?:tax )?refund of|steht (?:eine|ein) \w+ zu)\b", re.IGNORECASE)
_LINK = re.compile(r"\b(?:https?://\S+|www\.\S+|(?<!@)[a-z0-9-]+\.(?:com|net|org|info|top|xyz|io|co|app|link|site)\b\S*)",
                   re.IGNORECASE)
_LINK_BAIT = re.compile(r"(?:secure|login|verify|reset|sso|account|update|support|claim|pay|zoll|customs|track"
                        r"|refund|rebate|erstattung|bonus)",
                        re.IGNORECASE)
# A sender that is a phone number or an unnamed service address, not a contact's name.
_UNKNOWN_SENDER = re.compile(r"^\s*(?:\+?[\d\s().-]{6,}|[\w.-]*(?:support|noreply|no-reply|helpdesk|admin|security|"
                             r"service|alert|notification)[\w.-]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Suspicion:
    message_id: str
    sender: str
    kind: str  # "injection" or "scam"
    signals: tuple[str, ...]
    wants: tuple[str, ...]  # what it asks for, in plain words: "a verification code", "a click on its link"
    claims_to_be: str = ""  # the name it opens with ("Northfield Bank: ..."), never vouched for
    about: str = ""  # what it is about, as a bare noun ("a parcel"): the wearer knows which message it is

    def describe(self) -> str:
        if self.kind == "injection":
            what = "is suspicious: it tries to give Tidings instructions, so it was ignored"
        else:
            what = "looks like a scam or phishing"
        posing = f" claiming to be {self.claims_to_be}" if self.claims_to_be else ""
        posing += f", about {self.about}," if self.about else "," if "," in posing else ""
        asks = f" It asks for {' and '.join(self.wants)}; don't give it." if self.wants else ""
        return f"A message from {self.sender}{posing} {what}.{asks}"


# "Northfield Bank: ...", "DHL Express: ...": the name a message opens with, as scams impersonate one;
# "it's Tobi, your cousin", "Renate Wiegand here", "this is Northfield Bank": the one it introduces itself by.
_OPENING_NAME = re.compile(r"^\s*((?:[A-Z][\w&.'-]*\s?){1,4}):\s")
_NAME = r"[A-Z][\w&'-]+(?: [A-Z][\w&'-]+){0,2}"
_INTRODUCES = re.compile(rf"\b(?:it['’]s|this is|i['’]m)\s+({_NAME}(?:,\s+your\s+[a-z]+)?)|\b({_NAME})\s+here\b")


def _claimed_identity(text: str) -> str:
    if opening := _OPENING_NAME.match(text):
        return opening.group(1).strip()
    if found := _INTRODUCES.search(text):
        return (found.group(1) or found.group(2)).strip()
    return ""


# What a scam is about, said without its claims: "a parcel", never "your parcel is held at customs".
_TOPIC = re.compile(r"\b(parcel|package|delivery|account|gift card|bank card|card|refund|invoice|prize|voucher|subscription"
                    r"|order|tax return)s?\b|(steuer)?(r[üu]ck)?erstattung", re.IGNORECASE)


def _about(text: str) -> str:
    found = _TOPIC.search(text)
    if not found:
        return ""
    noun = (found.group(1) or "refund").lower()  # the German word is said in English
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


_NEGATED_BEFORE = re.compile(r"(?:n['’]t|\bnot|\bno need to|\bnothing to|\bnever|\bno longer|\bwithout)\b"
                             r"[^.!?]{0,30}$", re.IGNORECASE)


def _asks_payment(text: str) -> bool:
    """A payment asked for, not one waived: "you don't need to come or pay anything" asks for none."""
    return any(not _NEGATED_BEFORE.search(text[:m.start()]) for m in _PAYMENT.finditer(text))


# An IBAN written out is where the money should go, not a request for the wearer's own.
_GIVEN_IBAN = re.compile(r"iban\s*:?\s*[a-z]{2}\d{2}", re.IGNORECASE)


def _credentials_asked(text: str) -> str:
    """The codes, passwords or bank details `text` asks for, "" for none."""
    return " ".join(m.group(0).lower() for m in _CREDENTIAL.finditer(text)
                    if not _GIVEN_IBAN.match(text, m.start()))


def _wants(text: str) -> tuple[str, ...]:
    wants = []
    asked = _credentials_asked(text)
    if asked:
        wants.append("your password" if "password" in asked else "a code" if "code" in asked or "pin" in asked
                     else "your bank details" if re.search(r"iban|bank|account|sort", asked)
                     else "your personal details")
    if _GIFT_CARDS.search(text):
        wants.append("gift cards and their codes")
    if _asks_payment(text):
        wants.append("a money transfer" if _TRANSFER.search(text) else "a payment")
    if _LINK.search(text):
        wants.append("a click on its link")
    if re.search(r"\breply\w*\s+(?:with\s+)?(?:yes|y|stop)\b", text, re.IGNORECASE):
        wants.append("a reply")
    return tuple(dict.fromkeys(wants))


def suspicion(message: Message) -> Suspicion | None:
    """Why `message` must not be trusted, or None."""
    text = message.text
    if _INJECTION.search(text):
        return Suspicion(message.id, message.sender, "injection", ("instructions aimed at the summarizer",),
                         _wants(text))
    signals = []
    unknown = bool(_UNKNOWN_SENDER.match(message.sender))
    if unknown:
        signals.append("sender is not a contact's name")
    if _credentials_asked(text):
        signals.append("asks for a code, password or bank details")
    if _THREAT.search(text):
        signals.append("threatens or hurries")
    if _PRIZE.search(text):
        signals.append("promises a prize")
    if _GIFT_CARDS.search(text):
        signals.append("asks for gift cards")
    links = _LINK.findall(text)
    if any(_LINK_BAIT.search(link) for link in links):
        signals.append("links to a login-like site")
    if _asks_payment(text) and (links or unknown):
        signals.append("asks for a payment")
    # One signal is everyday ("reset your password at work"); scams combine them.
    if len(signals) >= 2 and (unknown or len(signals) >= 3):
        return Suspicion(message.id, message.sender, "scam", tuple(signals), _wants(text),
                         _claimed_identity(text), _about(text))
    return None


def suspicions(messages: Sequence[Message]) -> list[Suspicion]:
    """One per untrusted message; a flagged sender's other messages, before it or after (its link, its
    deadline, its "it's me, your cousin, new number"), are flagged too."""
    found = [suspicion(message) for message in messages]
    kinds: dict[str, str] = {}
    for message, suspect in zip(messages, found):
        if suspect is not None:
            kinds.setdefault(message.sender, suspect.kind)
    return [suspect or Suspicion(message.id, message.sender, kinds[message.sender], (), _wants(message.text),
                                 _claimed_identity(message.text), _about(message.text))
            for message, suspect in zip(messages, found) if suspect is not None or message.sender in kinds]


def warning(flagged: Sequence[Suspicion]) -> str:
    """What the wearer hears about the untrusted messages: one sentence or two per sender."""
    by_sender: dict[str, Suspicion] = {}
    for s in flagged:
        first = by_sender.setdefault(s.sender, s)
        by_sender[s.sender] = Suspicion(first.message_id, s.sender, first.kind,
                                        tuple(dict.fromkeys(first.signals + s.signals)),
                                        tuple(dict.fromkeys(first.wants + s.wants)),
                                        first.claims_to_be or s.claims_to_be, first.about or s.about)
    return " ".join(s.describe() for s in by_sender.values())
