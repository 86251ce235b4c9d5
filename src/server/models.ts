/**
 * Which `model` names this server answers to.
 *
 * It serves one model. Its own name is the model folder's name (`Generator.modelName`,
 * e.g. "openchat-3.5-0106"). So that a client written for one of the servers
 * that host OpenChat 3.5 today works without edits, the names those servers use
 * are accepted too (compared case-insensitively):
 *  - OpenChat's own server (`ochat.serving.openai_api_server`): its model type, "openchat_3.5";
 *  - Hugging Face ids, as vLLM-style servers and hosted APIs use them: "openchat/openchat-3.5-0106",
 *    "openchat/openchat-3.5-1210", "openchat/openchat_3.5", and "openchat/<folder name>";
 *  - short forms: "openchat-3.5", "openchat-3.5-0106", "openchat-3.5-1210";
 *  - Cloudflare Workers AI: "@cf/openchat/openchat-3.5-0106".
 * The aliases map to whatever model is loaded: the server does not check that the
 * folder really holds OpenChat 3.5 (serving a different checkpoint under these
 * names is the operator's choice). `extraAliases` adds more.
 */
export const OPENCHAT_ALIASES: readonly string[] = [
  'openchat_3.5',
  'openchat-3.5',
  'openchat-3.5-0106',
  'openchat-3.5-1210',
  'openchat/openchat-3.5-0106',
  'openchat/openchat-3.5-1210',
  'openchat/openchat_3.5',
  '@cf/openchat/openchat-3.5-0106',
];

export class ModelNames {
  /** Every accepted name, in listing order: the served name first. */
  readonly all: readonly string[];
  private readonly lookup: Set<string>;

  constructor(readonly served: string, extraAliases: readonly string[] = []) {
    const names = [served, `openchat/${served}`, ...OPENCHAT_ALIASES, ...extraAliases];
    const seen = new Set<string>();
    this.all = names.filter((n) => {
      const key = n.toLowerCase();
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    this.lookup = seen;
  }

  accepts(name: string): boolean {
    return this.lookup.has(name.toLowerCase());
  }
}
