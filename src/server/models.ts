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
 *
 * Each LoRA adapter loaded beside the model (serve --lora NAME=DIR) is one more model
 * name, as vLLM serves them: a request for it runs under that adapter, a request for
 * any of the base model's names runs without one.
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

  /** Adapter names by their lower-case form. */
  private readonly adapterNames = new Map<string, string>();

  constructor(
    readonly served: string,
    extraAliases: readonly string[] = [],
    /** The LoRA adapters loaded, by name (Generator.adapterNames). */
    readonly adapters: readonly string[] = [],
  ) {
    const names = [served, `openchat/${served}`, ...OPENCHAT_ALIASES, ...extraAliases];
    const seen = new Set<string>();
    this.all = names.filter((n) => {
      const key = n.toLowerCase();
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    this.lookup = seen;
    for (const a of adapters) {
      const key = a.toLowerCase();
      if (seen.has(key) || this.adapterNames.has(key)) {
        throw new Error(`the LoRA adapter name '${a}' is already a name of the base model or of another adapter; choose another (--lora NAME=DIR)`);
      }
      this.adapterNames.set(key, a);
    }
  }

  accepts(name: string): boolean {
    const key = name.toLowerCase();
    return this.lookup.has(key) || this.adapterNames.has(key);
  }

  /** The adapter a model name selects, as it was loaded; undefined for the base model's names (and unknown ones). */
  adapterFor(name: string): string | undefined {
    return this.adapterNames.get(name.toLowerCase());
  }
}
