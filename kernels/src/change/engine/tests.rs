//! The engine's orders (wavefront, phase by phase, the dependency cone) against each
//! other: the same bits for the own rows, whatever the order, group or threads.

use super::*;
use crate::change::rng::mix64;

/// A random band and program; `salt` varies everything.
struct Case {
    x: Vec<u8>,
    f: [i32; 256],
    q16: [u32; 256],
    gauge: [i8; 256],
    thresholds: Vec<Vec<u32>>,
}

fn case(salt: u64, pixels: usize) -> Case {
    let mut n = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        n = n.wrapping_add(1);
        mix64(n)
    };
    let x = (0..pixels).map(|_| next() as u8).collect();
    let f = std::array::from_fn(|_| (next() % 2049) as i32 - 1024);
    let q16 = std::array::from_fn(|_| (next() % 65536) as u32);
    let gauge = std::array::from_fn(|_| if next() & 1 == 0 { 1 } else { -1 });
    // Tables of assorted lengths and acceptance levels, one per annealing sweep.
    let thresholds = (0..3)
        .map(|k| {
            let len = [0usize, 40, 3000][k];
            (0..len)
                .map(|_| (next() >> 32) as u32 >> (next() % 4))
                .collect()
        })
        .collect();
    Case {
        x,
        f,
        q16,
        gauge,
        thresholds,
    }
}

/// Every order and wavefront group gives the spins of phase by phase, and updating
/// only the cone of some own rows leaves those rows as updating every row does:
/// both radii, both initialisations, with and without the gauge, bands that start
/// on either row class, widths below and above the colour period, groups from one
/// phase to more than the band has, own rows at either edge, in the middle, one row.
#[test]
fn the_wavefront_and_the_cone_compute_what_phase_by_phase_does() {
    let mut checked = 0;
    for (salt, (width, rows, y0)) in [
        (1, 9, 0),
        (7, 13, 3),
        (300, 23, 5),
        (2, 4, 1),
        (64, 1, 2),
        (9, 40, 0),
    ]
    .into_iter()
    .enumerate()
    {
        for radius in 1..=2 {
            for (init, gauged) in [(Init::Sign, false), (Init::Window(1), true)] {
                let c = case(salt as u64 * 10 + radius as u64, width * rows);
                let prog = Program {
                    f: &c.f,
                    q16: &c.q16,
                    gauge: gauged.then_some(&c.gauge),
                    b: 100,
                    radius,
                    init,
                    thresholds: &c.thresholds,
                    icm_sweeps: 2,
                    seed: 42 + salt as u64,
                };
                let band = Band {
                    x: &c.x,
                    width,
                    rows,
                    y0,
                    height: y0 + rows + 7,
                };
                let never = Cancel::new();
                let every_row =
                    solve_grouped(&band, &prog, Order::PhaseByPhase, 1, 0..rows, &never)
                        .expect("not cancelled");
                let owns = [
                    0..rows,
                    0..rows.div_ceil(3),
                    rows / 3..rows,
                    rows / 2..rows / 2 + 1,
                ];
                for own in owns {
                    let want = every_row.mask_rows(own.start, own.end);
                    let orders = [1, 2, 3, 7, 1000]
                        .map(|group| (Order::Wavefront, group))
                        .into_iter()
                        .chain([(Order::PhaseByPhase, 1)]);
                    for (order, group) in orders {
                        let got = solve_grouped(&band, &prog, order, group, own.clone(), &never)
                            .expect("not cancelled");
                        let what = format!(
                            "width {width}, rows {rows}, y0 {y0}, r {radius}, {order:?}, \
                             group {group}, own {own:?}"
                        );
                        if own == (0..rows) {
                            assert_eq!(got.s, every_row.s, "{what}");
                        }
                        assert_eq!(got.mask_rows(own.start, own.end), want, "{what}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 6 * 2 * 2 * 4 * 6);
}
