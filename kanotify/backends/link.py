"""Links: read one link by name, create the ``[bgp]`` dummy link, set it up without ARP.

Our own rtnetlink messages (:mod:`.netlink.rtlink`), as for addresses.  A link
is never deleted (the BGP daemon keeps watching it, and an operator's addresses
on it would go with it); a link of the same name but of another kind is left
that kind (``kanotify doctor`` says so) and only its flags are set.
"""

from __future__ import annotations

import errno
from typing import Iterable, Sequence

from ..actions import Action, AddLink, SetLink
from ..errors import ApplyError
from ..model import Link
from .base import OneAtATime
from .netlink import rtlink as r
from .rtnl import RtnetlinkBackend

_MASK = r.IFF_UP | r.IFF_NOARP


def _flags(link: Link) -> int:
    return (r.IFF_UP if link.up else 0) | (r.IFF_NOARP if link.noarp else 0)


class LinkBackend(OneAtATime, RtnetlinkBackend):
    """Observe and create links in this network namespace (or in ``netns``).

    ``writes`` counts the requests that changed something: a converged second run leaves it at 0.
    """

    kind = "link"

    def __init__(self, netns: str | None = None) -> None:
        super().__init__(netns)
        self.writes = 0

    def observe(self, names: Iterable[str]) -> dict[str, Link]:
        """The links of these names that exist, as the kernel has them."""
        found: dict[str, Link] = {}
        for name in names:
            have = self._get(name)
            if have is not None:
                found[name] = Link(have.name, have.kind, bool(have.flags & r.IFF_UP),
                                   bool(have.flags & r.IFF_NOARP))
        return found

    def apply(self, action: Action) -> None:
        """Apply an :class:`AddLink` or :class:`SetLink`; "already there" is success."""
        if isinstance(action, AddLink):
            self._add(action.link)
        elif isinstance(action, SetLink):
            self._set(action.new)
        else:
            raise ApplyError(f"the link backend cannot apply {type(action).__name__}: {action}")

    def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
        return super().apply_many(actions)

    # ------------------------------------------------------------------ helpers

    def _get(self, name: str) -> r.LinkMessage | None:
        try:
            replies = self._request(lambda seq: r.getlink_request(seq, name), f"read link {name}", retry=False)
        except ApplyError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for msg in replies:
            if msg.type == r.RTM_NEWLINK:
                return r.decode(msg.payload)
        return None

    def _add(self, link: Link) -> None:
        what = f"create {link}"
        if link.kind != "dummy":
            raise ApplyError(f"{what}: kanotify creates dummy links only", errno.EINVAL)
        self.writes += 1
        try:
            self._request(lambda seq: r.new_dummy_request(seq, link.name, _flags(link), _MASK), what)
        except ApplyError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                raise ApplyError(f"{what}: this kernel has no dummy link driver (modprobe dummy; "
                                 "CONFIG_DUMMY)", exc.errno) from exc
            if exc.errno != errno.EEXIST:
                raise
            self._set(link)  # created meanwhile (by the operator, another run): make sure of its flags

    def _set(self, link: Link) -> None:
        what = f"set link {link.name}"
        have = self._get(link.name)
        if have is None:
            raise ApplyError(f"{what}: no such link", errno.ENODEV)
        if have.flags & _MASK == _flags(link):
            return
        self.writes += 1
        self._request(lambda seq: r.set_flags_request(seq, have.index, _flags(link), _MASK), what)


__all__ = ["LinkBackend"]
