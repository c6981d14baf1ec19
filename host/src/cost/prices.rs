//! The dated price table `faaskeeper cost` uses (docs/cost.md repeats it).

/// An on-demand VM type a ZooKeeper ensemble could run on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vm {
    /// Instance type.
    pub name: &'static str,
    /// Dollars per hour, Linux, on demand.
    pub hourly: f64,
}

/// Prices in dollars per million requests (units), unless a field says otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// Where and when the numbers were taken.
    pub source: &'static str,
    /// DynamoDB on-demand write request unit (1 KiB).
    pub dynamo_write_unit: f64,
    /// DynamoDB on-demand read request unit (4 KiB, strongly consistent).
    pub dynamo_read_unit: f64,
    /// S3 Standard GET.
    pub s3_get: f64,
    /// S3 Standard PUT, COPY, POST, LIST.
    pub s3_put: f64,
    /// SQS request, per started 64 KiB, at the FIFO price (the writer and session queues are
    /// FIFO; the distributor queue is standard at $0.40, so SQS is priced from above).
    pub sqs_request: f64,
    /// Lambda request.
    pub lambda_invocation: f64,
    /// Lambda compute, per million GB-seconds (x86).
    pub lambda_gb_second: f64,
    /// VM types for the ZooKeeper baseline (three of each, as in the FaaSKeeper paper).
    pub zookeeper: &'static [Vm],
}

/// Hours AWS bills in an average month.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// AWS list prices, us-east-1, on demand, as published in 2025; DynamoDB on-demand at the
/// prices in force since 1 November 2024 (half the earlier ones).
pub const AWS_US_EAST_1_2025: Prices = Prices {
    source: "AWS list prices, us-east-1, on demand, 2025 (DynamoDB since 2024-11-01)",
    dynamo_write_unit: 0.625,
    dynamo_read_unit: 0.125,
    s3_get: 0.40,
    s3_put: 5.00,
    sqs_request: 0.50,
    lambda_invocation: 0.20,
    lambda_gb_second: 16.6667,
    zookeeper: &[
        Vm {
            name: "t3.small",
            hourly: 0.0208,
        },
        Vm {
            name: "t3.medium",
            hourly: 0.0416,
        },
        Vm {
            name: "t3.large",
            hourly: 0.0832,
        },
    ],
};
