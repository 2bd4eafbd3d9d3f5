"""Parse a packet written as a user would say it, for ``polywall explain``.

The form is ``PROTOCOL [ICMP-TYPE] [STATE] SOURCE -> DESTINATION [DIRECTION]
[on IFACE] [out-on IFACE]``, for example::

    tcp 198.51.100.5:40000 -> 192.0.2.10:993 in on eth0
    udp [2001:db8::5]:5353 -> [2001:db8::1]:53 fwd on eth1 out-on eth0
    icmp echo-request 192.0.2.9 -> 192.0.2.1
    tcp established 198.51.100.5:40000 -> 192.0.2.10:993

The parser is written by hand so that every error points at the exact column
of the packet text, which the diagnostics file names ``<packet>``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass

from compiler.catalog import CT_STATES, ICMP_TYPES, ICMPV6_TYPES, IcmpType
from compiler.errors import Diagnostic, PolicyError, Source, SourceCache
from compiler.graph import DIRECTION_CHAINS

PACKET_FILE = "<packet>"
PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6")
DIRECTIONS = ("in", "out", "fwd")
ARROW = "->"
EXAMPLE = "tcp 198.51.100.5:40000 -> 192.0.2.10:993 in on eth0"
# The same characters as an interface name in a policy, without the '+' wildcard.
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:-]*$")
# Linux interface names are at most IFNAMSIZ - 1 = 15 bytes (linux/if.h).
MAX_INTERFACE_NAME = 15
MAX_ICMP_TYPE = 255

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Packet:
    """One packet as the firewall matches it: addresses, ports, state, direction and interfaces.

    ``in_interface`` and ``out_interface`` are None when the packet text does
    not name them; such a packet matches no rule that names that interface.
    """

    protocol: str
    source: IpAddress
    destination: IpAddress
    source_port: int | None = None
    destination_port: int | None = None
    icmp_type: int | None = None
    state: str = "new"
    direction: str = "in"
    in_interface: str | None = None
    out_interface: str | None = None

    @property
    def family(self) -> str:
        return "ipv4" if self.source.version == 4 else "ipv6"

    @property
    def chain(self) -> str:
        """The base chain that filters the packet: input, forward or output."""
        return DIRECTION_CHAINS[self.direction]

    @property
    def icmp_type_name(self) -> str | None:
        """The catalog name of the ICMP type, or None when it has no name or is not ICMP."""
        if self.icmp_type is None:
            return None
        for entry in icmp_table(self.protocol).values():
            if entry.code == self.icmp_type:
                return entry.name
        return None

    def __str__(self) -> str:
        words = [self.protocol]
        if self.icmp_type is not None:
            words.append(self.icmp_type_name or str(self.icmp_type))
        words.append(self.state)
        words += [_endpoint_text(self.source, self.source_port), ARROW]
        words += [_endpoint_text(self.destination, self.destination_port), self.direction]
        if self.direction == "out":
            if self.out_interface is not None:
                words += ["on", self.out_interface]
        else:
            if self.in_interface is not None:
                words += ["on", self.in_interface]
            if self.out_interface is not None:
                words += ["out-on", self.out_interface]
        return " ".join(words)

    def to_json(self) -> dict:
        """Convert the packet to plain JSON data with a fixed set of keys."""
        return {
            "text": str(self),
            "protocol": self.protocol,
            "family": self.family,
            "icmp_type": self.icmp_type,
            "icmp_type_name": self.icmp_type_name,
            "state": self.state,
            "source": str(self.source),
            "source_port": self.source_port,
            "destination": str(self.destination),
            "destination_port": self.destination_port,
            "direction": self.direction,
            "chain": self.chain,
            "in_interface": self.in_interface,
            "out_interface": self.out_interface,
        }


def icmp_table(protocol: str) -> dict[str, IcmpType]:
    """Return the ICMP type catalog of a protocol: ICMP for icmp, ICMPv6 for icmpv6."""
    return ICMPV6_TYPES if protocol == "icmpv6" else ICMP_TYPES


def _endpoint_text(address: IpAddress, port: int | None) -> str:
    if port is None:
        return str(address)
    if address.version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


@dataclass(frozen=True)
class _Token:
    """A word of the packet text and the 1-based column where it starts."""

    text: str
    column: int

    @property
    def end_column(self) -> int:
        return self.column + len(self.text)


def _source(column: int, end_column: int | None = None) -> Source:
    return Source(PACKET_FILE, 1, column, end_column or column + 1)


def _fail(message: str, column: int, end_column: int | None = None, hint: str | None = None):
    return PolicyError(Diagnostic(message, _source(column, end_column), hint))


def _token_error(message: str, token: _Token, hint: str | None = None) -> PolicyError:
    return _fail(message, token.column, token.end_column, hint)


def _suggest(word: str, choices) -> str | None:
    if word.lower() in choices:
        return f"did you mean '{word.lower()}'?"
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def tokenize(text: str) -> list[_Token]:
    """Split packet text into words and '->' arrows; an arrow needs no spaces around it."""
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in " \t":
            index += 1
            continue
        if ord(char) < 32 or ord(char) == 127:
            raise _fail(
                f"invalid character {char!r} in the packet",
                index + 1,
                hint="write the packet on one line of printable text",
            )
        if text.startswith(ARROW, index):
            tokens.append(_Token(ARROW, index + 1))
            index += len(ARROW)
            continue
        start = index
        while index < len(text) and text[index] not in " \t" and not text.startswith(ARROW, index):
            if ord(text[index]) < 32 or ord(text[index]) == 127:
                break
            index += 1
        tokens.append(_Token(text[start:index], start + 1))
    return tokens


def _is_number(word: str) -> bool:
    """Return True for a word of ASCII digits only (str.isdigit also takes other scripts)."""
    return word.isascii() and word.isdigit()


def _looks_like_address(word: str) -> bool:
    return word.startswith("[") or "." in word or ":" in word


class _PacketParser:
    """A recursive-descent parser over the tokens of one packet text."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def end_error(self, message: str, hint: str | None = None) -> PolicyError:
        """Build an error that points just past the last character of the packet."""
        column = len(self.text.rstrip()) + 1
        return _fail(message, column, column + 1, hint)

    def parse(self) -> Packet:
        protocol_token = self.protocol()
        protocol = protocol_token.text
        icmp_type, state = self.modifiers(protocol, protocol_token)

        source_token = self.peek()
        if source_token is None or source_token.text == ARROW:
            raise self.missing("source address", source_token, f"write, for example: {EXAMPLE}")
        source, source_port = self.endpoint(self.take(), protocol, "source")

        arrow = self.peek()
        if arrow is None:
            raise self.end_error(
                f"missing '{ARROW}' and the destination address",
                f"write: SOURCE {ARROW} DESTINATION",
            )
        if arrow.text != ARROW:
            raise _token_error(
                f"expected '{ARROW}' between the source and the destination, found '{arrow.text}'",
                arrow,
                f"write: SOURCE {ARROW} DESTINATION",
            )
        self.take()

        destination_token = self.peek()
        if destination_token is None or destination_token.text == ARROW:
            raise self.missing(f"destination address after '{ARROW}'", destination_token)
        self.take()
        destination, destination_port = self.endpoint(destination_token, protocol, "destination")
        if destination.version != source.version:
            raise _token_error(
                f"the source address is IPv{source.version} but the destination address is "
                f"IPv{destination.version}",
                destination_token,
                "give both addresses in one family",
            )

        direction, in_interface, out_interface = self.clauses()
        return Packet(
            protocol=protocol,
            source=source,
            destination=destination,
            source_port=source_port,
            destination_port=destination_port,
            icmp_type=icmp_type,
            state=state,
            direction=direction,
            in_interface=in_interface,
            out_interface=out_interface,
        )

    def missing(self, item: str, token: _Token | None, hint: str | None = None) -> PolicyError:
        if token is None:
            return self.end_error(f"missing {item}", hint)
        return _token_error(f"missing {item} before '{token.text}'", token, hint)

    def protocol(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _fail("the packet is empty", 1, hint=f"write, for example: {EXAMPLE}")
        if token.text in PROTOCOLS:
            return self.take()
        choices = ", ".join(PROTOCOLS[:-1]) + " or " + PROTOCOLS[-1]
        if token.text == ARROW or _looks_like_address(token.text):
            raise _token_error(
                f"missing protocol: a packet starts with {choices}",
                token,
                f"write, for example: {EXAMPLE}",
            )
        raise _token_error(
            f"unknown protocol '{token.text}'; expected {choices}",
            token,
            _suggest(token.text, PROTOCOLS),
        )

    def modifiers(self, protocol: str, protocol_token: _Token) -> tuple[int | None, str]:
        """Read the ICMP type and connection state words between the protocol and the source."""
        icmp_type: int | None = None
        state: _Token | None = None
        is_icmp = protocol in ("icmp", "icmpv6")
        while True:
            token = self.peek()
            if token is None or token.text == ARROW or _looks_like_address(token.text):
                break
            self.take()
            if token.text in CT_STATES:
                if state is not None:
                    raise _token_error(
                        f"the connection state is given twice (first '{state.text}' at column "
                        f"{state.column})",
                        token,
                    )
                state = token
            elif is_icmp:
                if icmp_type is not None:
                    raise _token_error(f"the {protocol} type is given twice", token)
                icmp_type = self.icmp_type(token, protocol)
            else:
                raise self.unknown_word(token, protocol)
        if is_icmp and icmp_type is None:
            names = ", ".join(sorted(icmp_table(protocol)))
            raise _fail(
                f"missing {protocol} type after '{protocol}'",
                protocol_token.column,
                protocol_token.end_column,
                f"write, for example, '{protocol} echo-request'; known types: {names}",
            )
        return icmp_type, state.text if state is not None else "new"

    def icmp_type(self, token: _Token, protocol: str) -> int:
        table = icmp_table(protocol)
        if token.text in table:
            return table[token.text].code
        if _is_number(token.text):
            code = int(token.text)
            if code > MAX_ICMP_TYPE:
                raise _token_error(
                    f"{protocol} type {code} is out of range",
                    token,
                    f"types are 0 to {MAX_ICMP_TYPE}",
                )
            return code
        other = "icmpv6" if protocol == "icmp" else "icmp"
        hint = _suggest(token.text, set(table) | set(CT_STATES))
        if token.text in icmp_table(other):
            hint = f"'{token.text}' is an {other} type; write '{other} {token.text}'"
        elif hint is None:
            hint = "known types: " + ", ".join(sorted(table))
        raise _token_error(f"unknown {protocol} type '{token.text}'", token, hint)

    def unknown_word(self, token: _Token, protocol: str) -> PolicyError:
        states = ", ".join(CT_STATES)
        if _is_number(token.text):
            return _token_error(
                f"unexpected '{token.text}': a port goes after its address",
                token,
                "write ADDRESS:PORT, as in 198.51.100.5:40000",
            )
        if token.text in ICMP_TYPES or token.text in ICMPV6_TYPES:
            return _token_error(
                f"'{token.text}' is an ICMP type, but the protocol is {protocol}",
                token,
                "write 'icmp TYPE' or 'icmpv6 TYPE'",
            )
        return _token_error(
            f"unknown connection state '{token.text}'; expected {states}",
            token,
            _suggest(token.text, CT_STATES),
        )

    def endpoint(self, token: _Token, protocol: str, role: str) -> tuple[IpAddress, int | None]:
        """Parse ``ADDRESS``, ``IPV4:PORT`` or ``[IPV6]:PORT`` and check it against the protocol."""
        text = token.text
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise _token_error(f"missing ']' after the IPv6 address '{text[1:]}'", token)
            address_text, address_offset = text[1:close], 1
            rest, rest_offset = text[close + 1 :], close + 1
            if rest and not rest.startswith(":"):
                column = token.column + rest_offset
                raise _fail(
                    f"unexpected '{rest}' after ']'",
                    column,
                    column + len(rest),
                    "write [IPV6]:PORT",
                )
        elif text.count(":") == 1:
            address_text, address_offset = text.split(":")[0], 0
            rest, rest_offset = text[len(address_text) :], len(address_text)
        else:
            address_text, address_offset = text, 0
            rest, rest_offset = "", len(text)

        address_column = token.column + address_offset
        address = self.address(address_text, address_column, bracketed=text.startswith("["))

        port = None
        if rest:
            port_column = token.column + rest_offset
            port = self.port(rest[1:], port_column + 1, role)
            if protocol in ("icmp", "icmpv6"):
                raise _fail(
                    f"{protocol} packets have no ports",
                    port_column,
                    port_column + len(rest),
                    f"remove ':{rest[1:]}'",
                )
        elif protocol in ("tcp", "udp"):
            hint = f"write {address}:PORT"
            if address.version == 6:
                hint = f"an IPv6 address with a port goes in brackets: [{address}]:PORT"
            raise _token_error(
                f"missing {role} port: a {protocol} packet has a port on both ends", token, hint
            )

        if protocol == "icmp" and address.version == 6:
            raise _fail(
                f"icmp is the IPv4 protocol, but the {role} address is IPv6",
                address_column,
                address_column + len(address_text),
                "write icmpv6 for IPv6 packets",
            )
        if protocol == "icmpv6" and address.version == 4:
            raise _fail(
                f"icmpv6 is the IPv6 protocol, but the {role} address is IPv4",
                address_column,
                address_column + len(address_text),
                "write icmp for IPv4 packets",
            )
        return address, port

    def address(self, text: str, column: int, bracketed: bool) -> IpAddress:
        end = column + max(1, len(text))
        if not text:
            raise _fail("missing address", column, end)
        if "/" in text:
            raise _fail(
                f"'{text}' is a network; a packet has one source and one destination address",
                column,
                end,
                "write a host address without a prefix length",
            )
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise _fail(f"invalid address '{text}'", column, end) from None
        if bracketed and address.version == 4:
            raise _fail(
                f"brackets are for IPv6 addresses, but '{text}' is IPv4",
                column - 1,
                end + 1,
                f"write {text}:PORT",
            )
        return address

    def port(self, text: str, column: int, role: str) -> int:
        end = column + max(1, len(text))
        if not text:
            raise _fail(f"missing {role} port after ':'", column - 1, column)
        if not _is_number(text):
            raise _fail(
                f"invalid {role} port '{text}'", column, end, "a port is a number from 1 to 65535"
            )
        value = int(text)
        if not 0 < value <= 65535:
            raise _fail(f"port {text} is out of range", column, end, "ports are 1 to 65535")
        return value

    def clauses(self) -> tuple[str, str | None, str | None]:
        """Read the direction, ``on IFACE`` and ``out-on IFACE`` after the destination."""
        direction: _Token | None = None
        on: tuple[_Token, str] | None = None
        out_on: tuple[_Token, str] | None = None
        while (token := self.peek()) is not None:
            self.take()
            if token.text in DIRECTIONS:
                if direction is not None:
                    raise _token_error(
                        f"the direction is given twice (first '{direction.text}' at column "
                        f"{direction.column})",
                        token,
                    )
                direction = token
            elif token.text in ("on", "out-on"):
                previous = on if token.text == "on" else out_on
                if previous is not None:
                    raise _token_error(
                        f"'{token.text}' is given twice (first at column {previous[0].column})",
                        token,
                    )
                entry = (token, self.interface(token))
                if token.text == "on":
                    on = entry
                else:
                    out_on = entry
            elif token.text == ARROW:
                raise _token_error(
                    f"unexpected second '{ARROW}': a packet has one source and one destination",
                    token,
                )
            elif direction is None:
                raise _token_error(
                    f"unknown direction '{token.text}'; expected in, out or fwd",
                    token,
                    _suggest(token.text, DIRECTIONS),
                )
            else:
                raise _token_error(
                    f"unexpected '{token.text}' after the packet; expected 'on IFACE', "
                    "'out-on IFACE' or the end",
                    token,
                )

        direction_name = direction.text if direction is not None else "in"
        if out_on is not None and direction_name != "fwd":
            raise _token_error(
                f"'out-on' applies only to fwd packets, not to {direction_name} packets",
                out_on[0],
                "write 'fwd' for a forwarded packet; for out packets, 'on IFACE' names the "
                "outgoing interface",
            )
        on_name = on[1] if on is not None else None
        if direction_name == "out":
            return direction_name, None, on_name
        return direction_name, on_name, out_on[1] if out_on is not None else None

    def interface(self, keyword: _Token) -> str:
        token = self.peek()
        if token is None or token.text == ARROW:
            raise _fail(
                f"missing interface name after '{keyword.text}'",
                keyword.end_column,
                keyword.end_column + 1,
                f"write, for example, '{keyword.text} eth0'",
            )
        self.take()
        name = token.text
        if name.endswith("+"):
            raise _token_error(
                f"'{name}' is a wildcard, but a packet passes one interface",
                token,
                f"name one interface, as in '{name[:-1]}0'",
            )
        if not INTERFACE_NAME.match(name):
            raise _token_error(
                f"invalid interface name '{name}'",
                token,
                "an interface name has letters, digits and the characters _ . @ : -",
            )
        if len(name.encode()) > MAX_INTERFACE_NAME:
            raise _token_error(
                f"interface name '{name}' is longer than {MAX_INTERFACE_NAME} bytes", token
            )
        return name


def parse_packet(text: str, sources: SourceCache | None = None) -> Packet:
    """Parse packet text, raising PolicyError at the column of the first problem.

    With ``sources``, the text is stored there under ``<packet>`` first, so that
    a rendered error can quote it with a caret.
    """
    if sources is not None:
        sources.texts[PACKET_FILE] = text
    return _PacketParser(text).parse()


def packet_text(words: list[str], after_arrows: list[list[str]] | None = None) -> str:
    """Join the command-line words of a packet into one text.

    ``after_arrows`` contains the words after each '->' argument, for a command
    line that gives the arrow as a separate word.
    """
    parts = [" ".join(words)]
    for group in after_arrows or ():
        parts.append(" ".join([ARROW, *group]))
    return " ".join(part for part in parts if part)
