//! Ethernet II with up to two VLAN tags (802.1Q, and 802.1ad outer tags for QinQ).
//!
//! A third tag is malformed: no origin uplink carries one, and passing it uninspected would let
//! a flood bypass every stage.

use aya_ebpf::programs::XdpContext;
use filter_common::Reason;

use super::read_at;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ outer) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88A8;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type_be: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VlanHdr {
    tci_be: [u8; 2],
    ether_type_be: [u8; 2],
}

#[inline(always)]
const fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// Returns the EtherType after any VLAN tags and the offset of the L3 header.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<(u16, usize), Reason> {
    let eth: EthHdr = read_at(ctx, 0)?;
    let mut ether_type = u16::from_be_bytes(eth.ether_type_be);
    let mut offset = ETH_HLEN;
    if is_vlan(ether_type) {
        let tag: VlanHdr = read_at(ctx, offset)?;
        ether_type = u16::from_be_bytes(tag.ether_type_be);
        offset += VLAN_HLEN;
        if is_vlan(ether_type) {
            let tag: VlanHdr = read_at(ctx, offset)?;
            ether_type = u16::from_be_bytes(tag.ether_type_be);
            offset += VLAN_HLEN;
            if is_vlan(ether_type) {
                return Err(Reason::Malformed);
            }
        }
    }
    Ok((ether_type, offset))
}
