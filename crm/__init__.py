"""The CRM wing: what turns the day's scores into messages and tells whether they worked.

Rules as data and the events they fire (:mod:`crm.rules`), the outbox that records each event once
(:mod:`crm.outbox`) and delivers it to files and a signed webhook (:mod:`crm.delivery`), the
day's trigger job (:mod:`crm.job`), treated-versus-holdout lift (:mod:`crm.lift`), uplift models
learned from our own holdouts (:mod:`crm.uplift`, :mod:`crm.uplift_metrics`, :mod:`crm.learn`),
and what marketers open: score and win-back exports (:mod:`crm.exports`) and the reports
(:mod:`crm.reports`, :mod:`crm.reports`, with :mod:`crm.formatting` and the font of
:mod:`crm.fonts`).

It sits between :mod:`models` (scores, policy) and the doors that use it (:mod:`training`'s CLI,
:mod:`serving`'s endpoints and dashboard), and imports neither of them.
"""
