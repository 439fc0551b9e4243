//! The validation table (shared with `moesim validate`): every case within its
//! tolerance of the published figure.

use moesim::validate::{run_case, CASES};

#[test]
fn every_validation_case_is_within_tolerance() {
    let mut failures = Vec::new();
    for case in CASES {
        let r = run_case(case);
        eprintln!(
            "{:<40} published {:>8.1} simulated {:>8.1?} error {:>6.1?}%",
            r.case, r.published, r.simulated, r.error_pct
        );
        if !r.pass {
            failures
                .push(format!("{}: published {} simulated {:?} ({:?})", r.case, r.published, r.simulated, r.failure));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn at_most_one_fitted_case_per_medium() {
    let fitted: Vec<&str> = CASES.iter().filter(|c| c.fitted).map(|c| c.metric).collect();
    assert_eq!(fitted.iter().filter(|m| **m == "nvlink_gb_per_s").count(), 1);
    assert_eq!(fitted.iter().filter(|m| **m == "rdma_gb_per_s").count(), 1);
}
