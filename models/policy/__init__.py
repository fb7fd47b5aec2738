"""From scores to action: win-back timing and ranking (:mod:`models.policy.winback`) and the reasons
a marketer reads (:mod:`models.policy.reasons`), in English and Traditional Chinese."""
