"""Cisco ASA and Firepower Threat Defense (FTD) syslog -> ECS.

Message formats follow the Cisco Secure Firewall ASA Series Syslog Messages
guide and the FTD syslog reference; ``_MESSAGES`` maps each message ID to its
pattern and handler (the catalogue in connectors/COVERAGE.md lists them).
What the IDs cover:

* traffic decisions and connections: ACL denies and permits (106001-106103,
  710002/710003/710005, 313001/313004, 338xxx dynamic filter), connection
  build and teardown (302013-302021), NAT (305011/305012);
* FTD security events (430001-430005, ``Key: value, ...`` lists);
* authentication: AAA (113004/113005/113008/113012/113015), management
  logins (605004/605005, 611101/611102/611103, 113021), WebVPN and
  AnyConnect (716001/716002/716039/716058/716059, 113039, 113019, 722022/
  722023/722028/722037/722051), SSL sessions (725001/725002/725007);
* administrator changes: commands (111008/111009/111010), configuration
  sessions (111001/111004/111007), local users and privileges (502101/
  502102/502103).

Addresses may be object names instead of IP addresses (``dst FE_xUI:
Server_Windows/15000`` when ``names`` or object-group logging is on): a name
goes to ``<side>.address`` and the event still has its ports, interfaces and
decision. An unknown message ID is still an event (code, severity, time,
message) with ``event.outcome: unknown``.

Layout: ``fields`` (syslog header, address patterns, ECS setters),
``traffic`` and ``access`` (the handlers by message family), ``ftd`` (FTD
security events), ``catalogue`` (message ID -> pattern and handler) and
``parse`` (the ``firewall/asa`` format).
"""

from connectors.cisco_asa.ftd import ftd_fields
from connectors.cisco_asa.parse import parse_asa

__all__ = ["ftd_fields", "parse_asa"]
