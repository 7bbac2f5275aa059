"""The ``tensorguard-custodian`` code location: the key ceremony and the decryption.

The custodian alone holds the CKKS secret and its ledger key (``custodian_keys``); it
decrypts a round's aggregate once, after verifying it; see
:mod:`tensorguard_assets.locations`.
"""

from tensorguard_assets.locations import CUSTODIAN

defs = CUSTODIAN.definitions()
