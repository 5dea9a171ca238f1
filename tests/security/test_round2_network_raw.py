"""Security round 2, point 3, continued: raw frames on the step's tap device.

With CAP_NET_RAW a RUN step could open an AF_PACKET socket on tap0 and hand
slirp4netns a frame addressed to 127.0.0.1 (or 0.0.0.0): slirp4netns connects to
the host's loopback as asked (``--disable-host-loopback`` only covers its 10.0.2.x
aliases), so the step reached host-only services after all.  The kernel's routing
refuses a loopback destination on tap0 for ordinary sockets, so the probe also
sends through one as a control.  A default-network step now has no CAP_NET_RAW
(ping still works through ICMP datagram sockets), and neither path delivers.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from security.oracle import build, static_binary

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]

PROBE_C = r"""
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static unsigned short csum(void *b, int len) {
    unsigned long s = 0; unsigned short *p = b;
    for (; len > 1; len -= 2) s += *p++;
    if (len) s += *(unsigned char *)p;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return ~s;
}

/* probe raw|plain DSTIP PORT: one UDP datagram "PWNED" to DSTIP:PORT */
int main(int argc, char **argv) {
    const char *msg = "PWNED";
    int port = atoi(argv[3]);
    if (!strcmp(argv[1], "icmp")) {   /* an unprivileged ping: an ICMP datagram socket */
        int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
        if (s < 0) { perror("PROBE socket(ICMP)"); return 0; }
        unsigned char echo[16] = {8, 0};
        ((unsigned short *)echo)[1] = csum(echo, sizeof echo);
        struct sockaddr_in to = {.sin_family = AF_INET};
        to.sin_addr.s_addr = inet_addr(argv[2]);
        struct timeval tv = {3, 0};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sendto(s, echo, sizeof echo, 0, (void *)&to, sizeof to);
        unsigned char reply[64];
        int n = recv(s, reply, sizeof reply, 0);
        printf("PROBE icmp %s\n", n > 0 && reply[0] == 0 ? "reply" : "none");
        return 0;
    }
    if (!strcmp(argv[1], "plain")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
        to.sin_addr.s_addr = inet_addr(argv[2]);
        int r = sendto(s, msg, strlen(msg), 0, (void *)&to, sizeof to);
        printf("PROBE plain %s %d\n", argv[2], r);
        return 0;
    }
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) { perror("PROBE socket(AF_PACKET)"); return 0; }
    struct ifreq ifr; memset(&ifr, 0, sizeof ifr); strcpy(ifr.ifr_name, "tap0");
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) { perror("PROBE tap0"); return 0; }
    int index = ifr.ifr_ifindex;
    ioctl(s, SIOCGIFHWADDR, &ifr);
    unsigned char gw[6] = {0x52, 0x55, 0x0a, 0x00, 0x02, 0x02};   /* slirp's gateway */
    unsigned char f[128]; memset(f, 0, sizeof f);
    struct ether_header *e = (void *)f;
    memcpy(e->ether_dhost, gw, 6); memcpy(e->ether_shost, ifr.ifr_hwaddr.sa_data, 6);
    e->ether_type = htons(ETH_P_IP);
    struct iphdr *ip = (void *)(f + 14);
    ip->ihl = 5; ip->version = 4; ip->ttl = 64; ip->protocol = 17;
    ip->saddr = inet_addr("10.0.2.100"); ip->daddr = inet_addr(argv[2]);
    struct udphdr *u = (void *)(f + 34);
    u->source = htons(40000); u->dest = htons(port); u->len = htons(8 + strlen(msg));
    memcpy(f + 42, msg, strlen(msg));
    ip->tot_len = htons(20 + 8 + strlen(msg)); ip->check = csum(ip, 20);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = index, .sll_halen = 6};
    memcpy(to.sll_addr, gw, 6);
    int r = sendto(s, f, 42 + strlen(msg), 0, (void *)&to, sizeof to);
    printf("PROBE raw %s %d\n", argv[2], r);
    return 0;
}
"""


def _probe(directory: Path) -> Path:
    return static_binary(PROBE_C, directory, "probe")


def test_raw_frames_to_the_hosts_loopback_are_refused(bstore: Path, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    _probe(context)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(3)
        port = listener.getsockname()[1]
        steps = " && ".join(f"/probe {mode} {address} {port}"
                            for mode in ("raw", "plain") for address in ("127.0.0.1", "0.0.0.0"))
        result = build(bstore, context, f"FROM busybox\nCOPY probe /probe\nRUN {steps}\n",
                       None, "--no-cache", "--progress", "plain")
        log = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
        try:
            received, _sender = listener.recvfrom(100)
        except TimeoutError:
            received = b""
    assert received == b"", f"a RUN step reached the host's 127.0.0.1: {received!r}\n{log}"
    assert "PROBE socket(AF_PACKET): Operation not permitted" in log, log


def test_ping_sockets_still_work_without_cap_net_raw(bstore: Path, tmp_path: Path) -> None:
    """ICMP datagram sockets (iputils ping uses them) stand in for raw ones: the step's
    namespace allows them for every group, as Docker sets ping_group_range."""
    context = tmp_path / "ctx"
    context.mkdir()
    _probe(context)
    out = tmp_path / "out"
    build(bstore, context, "FROM busybox\nCOPY probe /probe\n"
          "RUN /probe icmp 127.0.0.1 0 > /ping && grep CapEff /proc/self/status > /caps\n",
          out, "--no-cache")
    assert (out / "ping").read_text() == "PROBE icmp reply\n"
    assert not int((out / "caps").read_text().split()[1], 16) & (1 << 13)
