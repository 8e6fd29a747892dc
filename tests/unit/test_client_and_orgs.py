"""The person served (ID number, phone) and the org tree (scopes, units added)."""

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.actor import Actor
from domain.client import Client, check_id_number, check_phone, id_number_check_digit
from domain.errors import InvalidInput
from domain.orgs import CITY, OrgRegistry, OrgTree, OrgUnit, parent_of
from tests.unit.casekit import WORKER, make_id_number, replay

ADMIN = Actor("root", "admin")
DIGITS17 = st.text(alphabet="0123456789", min_size=17, max_size=17)
# A region (or 9, a foreigner's card), a birth date, a sequence number: the first 17 of a real ID number.
RESIDENT17 = st.builds(lambda region, born, sequence: f"{region}{born:%Y%m%d}{sequence}",
                       st.from_regex(r"[1-9][0-9]{5}", fullmatch=True),
                       st.dates(date(1900, 1, 1), date(2025, 12, 31)),
                       st.from_regex(r"[0-9]{3}", fullmatch=True))


def reference_check_character(first17: str) -> str:
    """GB 11643 as ISO 7064 MOD 11-2: digit i weighs 2**(17 - i); the check makes the sum 1 mod 11."""
    total = sum(int(d) * 2 ** (17 - i) for i, d in enumerate(first17))
    check = (12 - total % 11) % 11
    return "X" if check == 10 else str(check)


class TestIdNumberCheckDigit:
    @pytest.mark.parametrize(
        "id_number",
        [
            "11010519491231002X",  # the example printed in GB 11643
            "440524188001010014",
        ],
    )
    def test_accepts_published_valid_numbers(self, id_number):
        assert check_id_number(id_number) == id_number

    def test_computes_the_check_character_of_known_numbers(self):
        assert id_number_check_digit("11010519491231002") == "X"
        assert id_number_check_digit("44052418800101001") == "4"
        assert id_number_check_digit("35052119870612345") == reference_check_character("35052119870612345")

    @settings(max_examples=100, deadline=None)
    @given(first17=DIGITS17)
    def test_the_check_character_is_iso_7064_mod_11_2(self, first17):
        assert id_number_check_digit(first17) == reference_check_character(first17)

    def test_accepts_a_lowercase_x_and_records_it_uppercased(self):
        assert check_id_number("11010519491231002x") == "11010519491231002X"

    @pytest.mark.parametrize(
        "id_number",
        [
            "110105194912310021",  # check character should be X
            "440524188001010015",
            "11010519491231002Y",
            "11010519491231002",  # 17 characters
            "11010519491231002X0",  # 19 characters
            "1101051949123100X2",  # X not in last place
            "",
            None,
            110105194912310021,
        ],
    )
    def test_refuses_a_number_whose_check_character_or_shape_is_wrong(self, id_number):
        with pytest.raises(InvalidInput) as excinfo:
            check_id_number(id_number)
        assert excinfo.value.field == "id_number"

    @pytest.mark.parametrize("id_number,says", [
        ("350502999913990018", "birth date"),  # born 9999-13-99
        ("350502190002301238", "birth date"),  # 1900-02-30
        ("350502179912311235", "birth date"),  # before 1800
        ("350502209912310018", "birth date"),  # not born yet
        ("000000000000000001", "first digit is 0"),
    ])
    def test_refuses_a_number_whose_region_or_birth_date_cannot_be(self, id_number, says):
        """Right check characters all: GB 11643 gives the digits a meaning as well as a checksum."""
        with pytest.raises(InvalidInput) as excinfo:
            check_id_number(id_number)
        assert says in excinfo.value.reason

    def test_accepts_a_foreigners_permanent_residence_card_number(self):
        """The 2023 card: 18 characters beginning with 9, a birth date, the same check character."""
        first17 = "93505619800101123"
        assert check_id_number(first17 + id_number_check_digit(first17)).startswith("9")

    @settings(max_examples=100, deadline=None)
    @given(first17=RESIDENT17)
    def test_any_region_birth_date_and_sequence_with_their_check_character_are_valid(self, first17):
        id_number = first17 + id_number_check_digit(first17)
        assert check_id_number(id_number) == id_number

    @settings(max_examples=100, deadline=None)
    @given(first17=RESIDENT17, position=st.integers(0, 17), data=st.data())
    def test_a_single_wrong_character_is_always_caught(self, first17, position, data):
        id_number = first17 + id_number_check_digit(first17)
        replacement = data.draw(st.sampled_from([c for c in "0123456789X" if c != id_number[position]]))
        if position < 17 and replacement == "X":
            replacement = "0" if id_number[position] != "0" else "1"
        typo = id_number[:position] + replacement + id_number[position + 1 :]
        with pytest.raises(InvalidInput):
            check_id_number(typo)

    def test_refuses_full_width_digits(self):
        first17 = "３５０５０２１９８００１０１１２３"  # what a Chinese input method may type
        with pytest.raises(InvalidInput):
            check_id_number(first17 + id_number_check_digit(first17))


class TestPhone:
    @pytest.mark.parametrize(
        "phone,recorded",
        [
            ("13912345678", "13912345678"),
            ("+8613912345678", "+8613912345678"),
            ("8613912345678", "8613912345678"),
            ("139 1234 5678", "13912345678"),
            ("0595-22345678", "0595-22345678"),
            ("059522345678", "059522345678"),
            ("010-1234567", "010-1234567"),
            ("0595 2234 5678", "059522345678"),
        ],
    )
    def test_accepts_mobile_and_landline_numbers(self, phone, recorded):
        assert check_phone(phone) == recorded

    @pytest.mark.parametrize(
        "phone",
        [
            "1391234567",  # 10 digits
            "139123456789",  # 12 digits
            "23912345678",  # a mobile starts with 1
            "595-22345678",  # a landline starts with 0
            "0595-123456",  # too short
            "+8513912345678",
            "139-1234-5678",
            "phone",
            "",
            None,
            13912345678,
        ],
    )
    def test_refuses_anything_else(self, phone):
        with pytest.raises(InvalidInput) as excinfo:
            check_phone(phone)
        assert excinfo.value.field == "phone"

    def test_refuses_a_trailing_newline(self):
        with pytest.raises(InvalidInput):
            check_phone("13912345678\n")


class TestRegisterClient:
    def test_keeps_the_identity_in_the_personal_values_of_the_event(self):
        client = Client.register(
            WORKER, name=" 林秀英 ", id_number="11010519491231002x", phone="139 1234 5678", org_unit="350502"
        )
        (event,) = client.collect_events()
        assert event.personal == {"name": "林秀英", "id_number": "11010519491231002X", "phone": "13912345678"}
        assert event.actor == {"user": "li", "role": "case_worker"}
        assert (event.org_unit, client.org_unit, client.id_number) == ("350502", "350502", "11010519491231002X")
        public = repr({k: v for k, v in vars(event).items() if k != "personal"})
        assert "林秀英" not in public and "11010519491231002X" not in public and "13912345678" not in public

    def test_an_address_is_optional(self):
        client = Client.register(
            WORKER, name="林秀英", id_number=make_id_number(), phone="13912345678", org_unit="350502",
            address="鲤城区某街道12号",
        )
        assert client.personal["address"] == "鲤城区某街道12号"

    @pytest.mark.parametrize(
        "changes,field",
        [
            ({"name": ""}, "name"),
            ({"name": "x" * 101}, "name"),
            ({"id_number": "110105194912310021"}, "id_number"),
            ({"phone": "12345"}, "phone"),
            ({"address": " "}, "address"),
        ],
    )
    def test_refuses_invalid_identity_naming_the_field(self, changes, field):
        fields = {"name": "林秀英", "id_number": make_id_number(), "phone": "13912345678", "org_unit": "350502"}
        with pytest.raises(InvalidInput) as excinfo:
            Client.register(WORKER, **{**fields, **changes})
        assert excinfo.value.field == field


def ancestors(code: str) -> list[str]:
    """The code itself and every code above it, nearest first, by parent_of."""
    chain: list[str] = []
    current: str | None = code
    while current is not None:
        chain.append(current)
        current = parent_of(current)
    return chain


def registry_with_village() -> OrgRegistry:
    registry = OrgRegistry.founded()
    registry.add_units(
        [OrgUnit("350502001", "海滨街道", "township"), OrgUnit("350502001001", "某社区", "community")], ADMIN
    )
    return registry


class TestOrgTree:
    def tree(self) -> OrgTree:
        return registry_with_village().tree()

    def test_the_city_covers_a_county_whose_code_it_is_not_a_prefix_of(self):
        assert not "350502".startswith("350500")
        assert self.tree().covers("350500", "350502")
        assert self.tree().covers("350500", "350590")

    def test_a_county_covers_its_townships_and_villages_but_not_another_countys(self):
        tree = self.tree()
        assert tree.covers("350502", "350502001")
        assert tree.covers("350502", "350502001001")
        assert not tree.covers("350503", "350502001")
        assert not tree.covers("350503", "350502001001")
        assert not tree.covers("350502", "350503")

    def test_a_township_covers_its_villages(self):
        assert self.tree().covers("350502001", "350502001001")
        assert not self.tree().covers("350502002", "350502001001")

    def test_nothing_covers_what_is_above_it(self):
        tree = self.tree()
        assert not tree.covers("350502001001", "350502001")
        assert not tree.covers("350502001", "350502")
        assert not tree.covers("350502", "350500")

    def test_a_unit_covers_itself_and_no_scope_covers_everything(self):
        tree = self.tree()
        for code in ("350500", "350502", "350502001", "350502001001"):
            assert tree.covers(code, code)
            assert tree.covers(None, code)

    @given(st.sampled_from(["350500", "350502", "350503", "350590"]), st.integers(0, 2), st.integers(0, 2),
           st.sampled_from(["350500", "350502", "350503"]), st.integers(0, 2), st.integers(0, 2))
    def test_covering_is_being_an_ancestor(self, county, township, village, other, t2, v2):
        def code(top: str, t: int, v: int) -> str:
            return top + (f"{t:03}" if t or v else "") + (f"{v:03}" if v else "") if top != CITY else CITY
        scope, unit = code(county, township, village), code(other, t2, v2)
        assert self.tree().covers(scope, unit) == (scope in ancestors(unit))

    def test_a_township_directly_under_the_city_is_one_below_it(self):
        from domain.orgs import depth_of
        assert [depth_of(c) for c in ("350500", "350502", "350500001", "350502001", "350502001001")] == [0, 1, 1, 2, 3]
        assert self.tree().covers("350500", "350500001") and not self.tree().covers("350502", "350500001")

    def test_a_malformed_scope_covers_nothing(self):
        assert not self.tree().covers("", "350502")
        assert not self.tree().covers("3505", "350502")

    def test_parents_run_from_the_unit_up_to_the_city(self):
        assert ancestors("350502001001") == ["350502001001", "350502001", "350502", "350500"]
        assert ancestors("350502001") == ["350502001", "350502", "350500"]
        assert ancestors("350582") == ["350582", "350500"]
        assert ancestors(CITY) == ["350500"]

    def test_lists_its_units_in_code_order(self):
        tree = self.tree()
        codes = [u.code for u in tree]
        assert codes == sorted(codes)
        assert len(tree) == len(codes) == 15
        assert "350502001001" in tree and "350502002" not in tree
        assert tree.get("350502001").kind == "township"
        assert tree.get("350502002") is None


class TestOrgRegistry:
    def test_quanzhou_and_its_twelve_county_level_units_are_built_in(self):
        tree = OrgRegistry.founded().tree()
        assert {u.code for u in tree} == {
            "350500", "350502", "350503", "350504", "350505", "350521", "350524", "350525", "350526",
            "350581", "350582", "350583", "350590",
        }
        assert tree.get("350500").kind == "city"
        assert tree.get("350590").name == "台商投资区"

    def test_adds_units_under_known_parents(self):
        registry = OrgRegistry.founded()
        registry.collect_events()
        added = registry.add_units([OrgUnit("350503001", "东海街道", "township")], ADMIN)
        (event,) = registry.collect_events()
        assert added == 1
        assert "350503001" in registry.tree()
        assert event.actor == {"user": "root", "role": "admin"}
        assert event.units == [{"code": "350503001", "name": "东海街道", "kind": "township"}]

    def test_refuses_a_unit_whose_parent_is_not_known(self):
        registry = OrgRegistry.founded()
        registry.collect_events()
        with pytest.raises(InvalidInput) as excinfo:
            registry.add_units([OrgUnit("350502009001", "某村", "village")], ADMIN)
        assert excinfo.value.field == "units[0].code"
        assert "350502009001" not in registry.tree()
        assert registry.collect_events() == []

    def test_adds_parents_first_whatever_the_order_given(self):
        registry = OrgRegistry.founded()
        registry.collect_events()
        units = [
            OrgUnit("350502001001", "某社区", "community"),
            OrgUnit("350502001002", "某企业残协", "enterprise"),
            OrgUnit("350502001", "海滨街道", "township"),
        ]
        assert registry.add_units(units, ADMIN) == 3
        (event,) = registry.collect_events()
        assert [u["code"] for u in event.units][0] == "350502001"
        assert {u["code"] for u in event.units} == {"350502001", "350502001001", "350502001002"}

    def test_does_not_add_a_unit_twice(self):
        registry = registry_with_village()
        registry.collect_events()
        assert registry.add_units([OrgUnit("350502001", "海滨街道", "township")], ADMIN) == 0
        assert registry.collect_events() == []
        units = [OrgUnit("350502002", "开元街道", "township")] * 2 + [OrgUnit("350502", "鲤城区", "county")]
        assert registry.add_units(units, ADMIN) == 1
        (event,) = registry.collect_events()
        assert event.units == [{"code": "350502002", "name": "开元街道", "kind": "township"}]

    @pytest.mark.parametrize("code", ["35050", "3505020", "35050200", "3505020011", "35050200100", "3505020010011",
                                      "35050a", "", "350502 "])
    def test_refuses_a_code_that_is_not_6_9_or_12_digits(self, code):
        registry = OrgRegistry.founded()
        with pytest.raises(InvalidInput) as excinfo:
            registry.add_units([OrgUnit(code, "某地", "township")], ADMIN)
        assert excinfo.value.field == "units[0].code"

    @pytest.mark.parametrize("unit,field", [
        (OrgUnit("350502001", "海滨街道", "hamlet"), "units[0].kind"),
        (OrgUnit("350502001", "  ", "township"), "units[0].name"),
    ])
    def test_refuses_an_unknown_kind_or_an_empty_name(self, unit, field):
        with pytest.raises(InvalidInput) as excinfo:
            OrgRegistry.founded().add_units([unit], ADMIN)
        assert excinfo.value.field == field

    def test_adds_nothing_when_one_unit_of_a_batch_is_refused(self):
        registry = OrgRegistry.founded()
        registry.collect_events()
        with pytest.raises(InvalidInput):
            registry.add_units(
                [OrgUnit("350502001", "海滨街道", "township"), OrgUnit("350599001", "某街道", "township")], ADMIN
            )
        assert "350502001" not in registry.tree()
        assert registry.collect_events() == []

    def test_the_registry_replays_to_the_same_units(self):
        registry = registry_with_village()
        events = registry.collect_events()
        assert replay(events).units == registry.units

    def test_an_import_that_lists_the_city_again_adds_only_what_is_new(self):
        registry = OrgRegistry.founded()
        units = [OrgUnit("350500", "泉州市", "city"), OrgUnit("350502001", "海滨街道", "township")]
        assert registry.add_units(units, ADMIN) == 1

    def test_a_refused_unit_is_named_by_its_place_in_the_list_given(self):
        registry = OrgRegistry.founded()
        units = [OrgUnit("350502001001", "某社区", "community"), OrgUnit("350599001", "某街道", "township")]
        with pytest.raises(InvalidInput) as excinfo:
            registry.add_units(units, ADMIN)
        assert excinfo.value.field == "units[1].code"
