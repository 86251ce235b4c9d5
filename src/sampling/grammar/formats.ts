/**
 * JSON Schema `format`s as regular expressions (regex.ts), for the formats OpenAI's strict
 * structured outputs document, plus `uri` (Pydantic's HttpUrl emits it).
 *
 * Each pattern is a subset of its format, chosen so that every string it matches passes
 * ajv-formats' "full" validator (the reference the tests check against), and wide enough for the
 * values real data holds. The subsets lean towards the canonical spelling, since the pattern
 * steers generation rather than judging input: `T` and `Z` in upper case, offsets as `+hh:mm`,
 * no leap seconds. Counts that the formats leave unbounded (fraction digits, duration numbers)
 * are bounded at 9 digits so that a model cannot be held in an endless run of digits.
 *
 * What a regular expression cannot count is bounded by construction: hostname's 253 characters
 * by at most 7 labels of at most 35 characters (7 * 35 + 6 dots = 251).
 */

const DIGIT = '[0-9]';
const HEX = '[0-9A-Fa-f]';

/** Leap years, exactly (divisible by 4, and by 400 when a century; year 0000 is one). */
const LEAP_YEAR = `(?:${DIGIT}{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)`;
const MONTH_DAY =
  '(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])' + // 31-day months
  '|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)' + // 30-day months
  '|02-(?:0[1-9]|1[0-9]|2[0-8]))';
const DATE = `(?:${DIGIT}{4}-${MONTH_DAY}|${LEAP_YEAR}-02-29)`;

/** Seconds below 60: ajv accepts 60 only as a leap second at 23:59 UTC, which no model should invent. */
const TIME = `(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.${DIGIT}{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])`;

const NUM = `${DIGIT}{1,9}`;
/** ISO 8601 durations as ajv reads them: weeks alone, or date and time parts with at least one component each. */
const DURATION_TIME = `T(?:${NUM}H(?:${NUM}M)?(?:${NUM}S)?|${NUM}M(?:${NUM}S)?|${NUM}S)`;
const DURATION_DATE = `(?:${NUM}Y(?:${NUM}M)?(?:${NUM}D)?|${NUM}M(?:${NUM}D)?|${NUM}D)`;
const DURATION = `P(?:${NUM}W|${DURATION_DATE}(?:${DURATION_TIME})?|${DURATION_TIME})`;

/** A DNS label: letters, digits and inner hyphens, 1 to `max` characters. */
const label = (max: number) => `[A-Za-z0-9](?:[A-Za-z0-9-]{0,${max - 2}}[A-Za-z0-9])?`;
const HOSTNAME = `${label(35)}(?:\\.${label(35)}){0,6}`;

/** The local part's common characters (ajv allows more punctuation, such as ! # $ & = ? ^ ~), in dot-separated atoms. */
const LOCAL_ATOM = '[A-Za-z0-9_%+-]{1,64}';
const EMAIL = `${LOCAL_ATOM}(?:\\.${LOCAL_ATOM}){0,3}@(?:${label(63)}\\.){1,4}[A-Za-z]{2,24}`;

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])';
const IPV4 = `${OCTET}(?:\\.${OCTET}){3}`;

const H16 = `${HEX}{1,4}`;
/** Eight groups, or n groups, "::", and at most 7 - n more (no embedded IPv4 tail). */
const IPV6 = [
  `${H16}(?::${H16}){7}`,
  ...Array.from({ length: 8 }, (_, n) => {
    const before = n === 0 ? '' : `${H16}(?::${H16}){${n - 1}}`;
    const after = n === 7 ? '' : `(?:${H16}(?::${H16}){0,${6 - n}})?`;
    return `${before}::${after}`;
  }),
].join('|');

const UUID = `${HEX}{8}-${HEX}{4}-${HEX}{4}-${HEX}{4}-${HEX}{12}`;

/** http(s) URLs: a hostname, an optional port, then path, query and fragment of RFC 3986 characters. */
const PCHAR = `(?:[A-Za-z0-9\\-._~!$&'()*+,;=:@]|%${HEX}{2})`;
const QCHAR = `(?:[A-Za-z0-9\\-._~!$&'()*+,;=:@/?]|%${HEX}{2})`;
const URI = `https?://${HOSTNAME}(?::[0-9]{1,5})?(?:/${PCHAR}*)*(?:\\?${QCHAR}*)?(?:#${QCHAR}*)?`;

/** Formats OpenAI's strict structured outputs document, as patterns for compileRegex whose every match is valid under ajv-formats' "full" validators. */
export const FORMAT_PATTERNS: Readonly<Record<string, string>> = Object.freeze({
  'date-time': `${DATE}T${TIME}`,
  time: TIME,
  date: DATE,
  duration: DURATION,
  email: EMAIL,
  hostname: HOSTNAME,
  ipv4: IPV4,
  ipv6: IPV6,
  uuid: UUID,
  uri: URI,
});
