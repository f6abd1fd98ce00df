"""From a thread's unread messages to what the wearer hears: plan, model draft, validators, fallback, triage."""
