//! The ABI's values: ID vectors, the layout table and its fingerprint,
//! version grammar, error codes, string views and handles (spec §3).

use holdfast_plugin_abi::{
    ABI_FINGERPRINT, ABI_LAYOUT, ABI_LAYOUT_ENTRIES, AbiError, AbiErrorCode, BundleId, GuestContractHandle,
    GuestContractId, HOLDFAST_ABI_VERSION, InstanceHandle, LAYOUT_TYPE_NAMES, LayoutEntry, StringView,
    Version, fnv1a_64, layout_fingerprint,
};

static RELOAD_TEST_V1: GuestContractId = GuestContractId::new("reload.test", 1);
static RELOAD_PLUGIN: BundleId = BundleId::new("reload-plugin");

#[test]
fn id_vectors() {
    assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    assert_eq!(RELOAD_TEST_V1.id(), 0x439b_95e8_e420_050a);
    assert_eq!(GuestContractId::new("reload.test", 2).id(), 0x439b_94e8_e420_0357);
    assert_eq!(RELOAD_PLUGIN.id(), 0x6650_a858_cfff_b358);
    // The major is written in decimal without leading zeros.
    assert_eq!(
        GuestContractId::new("x", 10).id(),
        fnv1a_64(b"guest_contract:x@10")
    );
    assert_eq!(GuestContractId::new("x", 0).id(), fnv1a_64(b"guest_contract:x@0"));
    assert_eq!(
        GuestContractId::new("x", u32::MAX).id(),
        fnv1a_64(b"guest_contract:x@4294967295")
    );
    assert_eq!(RELOAD_PLUGIN.to_string(), "0x6650a858cfffb358");
    assert_eq!(GuestContractId::from_u64(5).to_string(), "0x0000000000000005");
    assert_eq!(BundleId::from_u64(7).id(), 7);
}

#[test]
fn layout_table_lists_every_shared_type_in_order() {
    let expected: [(u32, u32); 16] = [
        (16, 8),
        (12, 4),
        (48, 8),
        (64, 8),
        (16, 8),
        (16, 8),
        (16, 8),
        (16, 8),
        (8, 4),
        (8, 4),
        (24, 8),
        (24, 8),
        (160, 8),
        (16, 8),
        (16, 8),
        (40, 8),
    ];
    for (index, (entry, (size, align))) in ABI_LAYOUT_ENTRIES.iter().zip(expected).enumerate() {
        assert_eq!(
            *entry,
            LayoutEntry {
                type_id: index as u32,
                size,
                align
            },
            "{}",
            LAYOUT_TYPE_NAMES[index]
        );
    }
    assert_eq!(LAYOUT_TYPE_NAMES[3], "GuestContractInterface");
    assert_eq!(LAYOUT_TYPE_NAMES[12], "HostApi");
    assert_eq!(ABI_FINGERPRINT, 0x43e6_58f9_7b85_204d);
    assert_eq!(layout_fingerprint(&ABI_LAYOUT_ENTRIES), ABI_FINGERPRINT);
    assert_eq!(
        (ABI_LAYOUT.abi_version, ABI_LAYOUT.entry_count),
        (HOLDFAST_ABI_VERSION, 16)
    );
    assert_eq!(ABI_LAYOUT.entries, ABI_LAYOUT_ENTRIES.as_ptr());
    // One byte of difference anywhere changes the fingerprint.
    let mut changed = ABI_LAYOUT_ENTRIES;
    changed[3].size = 56;
    assert_ne!(layout_fingerprint(&changed), ABI_FINGERPRINT);
}

#[test]
fn versions_parse_strictly_and_compare_by_major_and_minor() {
    assert_eq!("2.0.0".parse(), Ok(Version::new(2, 0, 0)));
    assert_eq!("1.2".parse(), Ok(Version::new(1, 2, 0)));
    assert_eq!("0.10.4294967295".parse(), Ok(Version::new(0, 10, u32::MAX)));
    for bad in [
        "",
        "1",
        "1.",
        ".1",
        "01.2",
        "1.02",
        "1.2.3.4",
        "1.2-beta",
        "+1.2",
        "1.4294967296",
        " 1.2",
    ] {
        assert!(bad.parse::<Version>().is_err(), "{bad:?} was accepted");
    }
    assert_eq!(
        "01.2".parse::<Version>().unwrap_err().to_string(),
        "invalid version: leading zero"
    );
    assert_eq!(Version::new(1, 2, 3).to_string(), "1.2.3");
    let provided = Version::new(1, 3, 0);
    assert!(provided.satisfies(&Version::new(1, 2, 9)));
    assert!(provided.satisfies(&Version::new(1, 3, 0)));
    assert!(!provided.satisfies(&Version::new(1, 4, 0)));
    assert!(!provided.satisfies(&Version::new(2, 0, 0)));
}

#[test]
fn error_codes_round_trip_and_unknown_codes_are_kept() {
    for code in 0..=17 {
        let known = AbiErrorCode::from_u32(code).expect("0..=17 are known");
        assert_eq!(known as u32, code);
    }
    assert_eq!(AbiErrorCode::from_u32(18), None);
    let unknown = AbiError::with_code(99, "from a newer plugin");
    assert_eq!((unknown.code, unknown.known_code()), (99, None));
    assert!(AbiError::ok().is_ok());
    assert!(AbiError::ok().message.is_absent());
    let busy = AbiError::new(AbiErrorCode::Busy, "reloading");
    assert_eq!(busy.known_code(), Some(AbiErrorCode::Busy));
    // SAFETY: the message is a static string.
    assert_eq!(unsafe { busy.message.to_str() }, Ok(Some("reloading")));
}

#[test]
fn string_views_distinguish_absent_empty_and_invalid() {
    let absent = StringView {
        ptr: std::ptr::null(),
        len: 12,
    };
    // SAFETY: absent views are never dereferenced.
    assert_eq!(unsafe { absent.to_str() }, Ok(None));
    let empty = StringView::default();
    assert!(!empty.is_absent());
    // SAFETY: the empty view points to a static empty string.
    assert_eq!(unsafe { empty.to_str() }, Ok(Some("")));
    let invalid = StringView::from_static(&[0xff, 0xfe]);
    // SAFETY: the view points to a static array.
    assert!(unsafe { invalid.to_str() }.is_err());
    let too_long = StringView {
        ptr: b"x".as_ptr(),
        len: usize::MAX,
    };
    // SAFETY: a length over isize::MAX is refused before any read.
    assert_eq!(unsafe { too_long.as_bytes() }, None);
    let owned = String::from("borrowed");
    let view = StringView::borrowed(&owned);
    // SAFETY: `owned` outlives the read.
    let text = unsafe { view.to_str() };
    assert_eq!(text, Ok(Some("borrowed")));
}

#[test]
fn handles_pack_generation_over_index() {
    assert!(GuestContractHandle::NULL.is_null());
    assert!(
        GuestContractHandle {
            index: u32::MAX,
            generation: 9
        }
        .is_null()
    );
    assert!(
        !GuestContractHandle {
            index: 0,
            generation: 0
        }
        .is_null()
    );
    let handle = InstanceHandle {
        index: 3,
        generation: 7,
    };
    assert_eq!(handle.to_u64(), 7 << 32 | 3);
    assert_eq!(InstanceHandle::from_u64(handle.to_u64()), handle);
    assert_eq!(
        GuestContractHandle::from_u64(u64::MAX),
        GuestContractHandle {
            index: u32::MAX,
            generation: u32::MAX
        }
    );
}
