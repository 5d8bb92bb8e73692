import {
  BREAK,
  Kind,
  parse,
  print,
  visit,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
} from 'graphql';
import { repoOf } from './github-paths.js';

/**
 * Whether one `POST api.github.com/graphql` body may pass for a box with a `repos` list. Pure.
 *
 * Passes only a JSON object `{query, operationName?, variables?}` whose document holds exactly one
 * operation (plus fragments), named, a query or mutation listed as `query Name` / `mutation Name`,
 * in which every `repository(owner:, name:)` (literal, variable or variable default) and every
 * `owner`/`name`/`repo` variable names a listed repository. A query may select only `repository`
 * (aliases allowed) and `__typename` at its root, so `viewer`, `search`, `node(id:)`,
 * `organization`… are not entry points; at any depth, fields that list repositories
 * (`repositories`, `forks`, …) and lookups by id, login or search (`node(id:)`, `user(login:)`)
 * are refused too. What passes is re-serialized (`print` of the parsed document, JSON of
 * the parsed values), so GitHub parses exactly what was judged: duplicate JSON keys, comments or
 * parser quirks cannot carry a second reading. Everything else is refused (fails closed).
 *
 * Not a confinement proof: GraphQL lets a query walk from a listed repository to related objects
 * (a fork's `parent`, cross-referenced issues, a pull request's head repository), and a mutation
 * acts on node ids that are not checked against `repos`.
 */

/** Largest GraphQL request body judged; a larger one is refused without parsing. */
export const GITHUB_GRAPHQL_MAX_BODY_BYTES = 256 * 1024;

/** Token cap handed to the parser (a legitimate `gh` query is a few hundred tokens). */
const MAX_TOKENS = 20_000;

const BODY_KEYS: ReadonlySet<string> = new Set(['query', 'operationName', 'variables']);

/** Root fields a query may select: the repository entry point and the harmless `__typename`. */
const QUERY_ROOT_FIELDS: ReadonlySet<string> = new Set(['repository', '__typename']);

/** Fields that list repositories (an owner's, a user's starred, a repository's forks…): refused anywhere. */
const REPOSITORY_LISTS: ReadonlySet<string> = new Set([
  'viewer',
  'repositories',
  'topRepositories',
  'repositoriesContributedTo',
  'starredRepositories',
  'watching',
  'pinnedItems',
  'pinnableItems',
  'itemShowcase',
  'forks',
  'contributionsCollection',
]);

/**
 * Fields that look an object up by id, login, URL or search text when given arguments
 * (`node(id:)`, `user(login:)`): refused with arguments. Without them they are ordinary edges
 * (`edges { node }`, `pullRequests { nodes }`, `author { user }`).
 */
const LOOKUPS: ReadonlySet<string> = new Set([
  'node',
  'nodes',
  'user',
  'organization',
  'repositoryOwner',
  'enterprise',
  'resource',
  'search',
]);

export interface GithubGraphqlPolicy {
  /** Lowercase `owner/name` the box may use. */
  readonly repos: ReadonlySet<string>;
  /** `query Name` / `mutation Name` entries (canonical form of `githubGraphqlOperations`). */
  readonly operations: ReadonlySet<string>;
}

export type GithubGraphqlVerdict =
  | {
      readonly allow: true;
      /** `query Name` or `mutation Name`. */
      readonly operation: string;
      /** Repositories the document names (lowercase `owner/name`, sorted). */
      readonly repos: readonly string[];
      /** The body to send upstream: the judged request, re-serialized. */
      readonly body: Buffer;
    }
  | { readonly allow: false; readonly reason: string };

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Variables = Readonly<Record<string, Json>>;

class Refusal extends Error {}

function refuse(reason: string): never {
  throw new Refusal(reason);
}

function isPlainObject(value: unknown): value is Record<string, Json> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function requireRepo(repos: ReadonlySet<string>, owner: string, name: string, where: string): string {
  const repo = repoOf(owner, name);
  if (repo === undefined) refuse(`${where} is not a valid owner/name`);
  if (!repos.has(repo)) refuse(`${where} names ${repo}, which is not in the box's repos`);
  return repo;
}

/** The JSON envelope: an object with only the known keys, typed as GitHub reads them. */
function readEnvelope(body: Uint8Array): {
  query: string;
  operationName: string | undefined;
  variables: Variables | undefined;
} {
  if (body.length > GITHUB_GRAPHQL_MAX_BODY_BYTES) {
    refuse(`the request body is larger than ${GITHUB_GRAPHQL_MAX_BODY_BYTES} bytes`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(body);
  } catch {
    refuse('the request body is not UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    refuse('the request body is not JSON');
  }
  if (Array.isArray(json)) refuse('batched GraphQL requests are not allowed');
  if (!isPlainObject(json)) refuse('the request body is not a JSON object');
  for (const key of Object.keys(json)) {
    if (!BODY_KEYS.has(key)) refuse(`unexpected key ${JSON.stringify(key.slice(0, 40))} in the request`);
  }
  const { query, operationName, variables } = json;
  if (typeof query !== 'string' || query.trim() === '') refuse('the request has no query string');
  if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') {
    refuse('operationName is not a string');
  }
  if (variables !== undefined && variables !== null && !isPlainObject(variables)) {
    refuse('variables is not a JSON object');
  }
  return {
    query,
    operationName: operationName ?? undefined,
    variables: variables ?? undefined,
  };
}

/** The single operation of the document, and its fragments by name. */
function readDocument(
  document: DocumentNode,
  operationName: string | undefined,
): { operation: OperationDefinitionNode; name: string; fragments: Map<string, FragmentDefinitionNode> } {
  const operations: OperationDefinitionNode[] = [];
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.OPERATION_DEFINITION) operations.push(definition);
    else if (definition.kind === Kind.FRAGMENT_DEFINITION) {
      if (fragments.has(definition.name.value)) refuse(`fragment ${definition.name.value} is defined twice`);
      fragments.set(definition.name.value, definition);
    } else refuse('the document holds type-system definitions');
  }
  if (operations.length !== 1) refuse(`the document holds ${operations.length} operations; exactly one may`);
  const operation = operations[0]!;
  const name = operation.name?.value;
  if (name === undefined) refuse('anonymous operations are not allowed; name the operation');
  if (operationName !== undefined && operationName !== name) {
    refuse(
      `operationName ${JSON.stringify(operationName.slice(0, 60))} is not the document's operation ${name}`,
    );
  }
  return { operation, name, fragments };
}

/** The fields an operation selects at its root, through fragment spreads and inline fragments. */
function rootFields(
  selectionSet: SelectionSetNode,
  rootType: string,
  fragments: ReadonlyMap<string, FragmentDefinitionNode>,
  seen: Set<string> = new Set(),
): FieldNode[] {
  const out: FieldNode[] = [];
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) {
      out.push(selection);
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      const type = selection.typeCondition?.name.value ?? rootType;
      if (type !== rootType) refuse(`a root fragment on ${type} in a ${rootType} operation`);
      out.push(...rootFields(selection.selectionSet, rootType, fragments, seen));
    } else {
      const name = selection.name.value;
      const fragment = fragments.get(name);
      if (fragment === undefined) refuse(`fragment ${name} is not defined`);
      if (seen.has(name)) refuse(`fragment ${name} is spread twice at the root or in a cycle`);
      seen.add(name);
      if (fragment.typeCondition.name.value !== rootType) {
        refuse(`fragment ${name} on ${fragment.typeCondition.name.value} spread at the ${rootType} root`);
      }
      out.push(...rootFields(fragment.selectionSet, rootType, fragments, seen));
    }
  }
  return out;
}

/** A string argument as GitHub will see it: a literal, a supplied variable, or the variable's default. */
function stringValue(
  value: ValueNode,
  variables: Variables | undefined,
  operation: OperationDefinitionNode,
): string | undefined {
  if (value.kind === Kind.STRING) return value.value;
  if (value.kind !== Kind.VARIABLE) return undefined;
  const name = value.name.value;
  if (variables !== undefined && Object.hasOwn(variables, name)) {
    const supplied = variables[name];
    return typeof supplied === 'string' ? supplied : undefined;
  }
  const definition = operation.variableDefinitions?.find((d) => d.variable.name.value === name);
  return definition?.defaultValue?.kind === Kind.STRING ? definition.defaultValue.value : undefined;
}

/** Checks every field of the document (operation and fragments); returns the repositories named. */
function checkFields(
  document: DocumentNode,
  operation: OperationDefinitionNode,
  variables: Variables | undefined,
  repos: ReadonlySet<string>,
): Set<string> {
  const named = new Set<string>();
  let refusal: string | undefined;
  visit(document, {
    Field(field) {
      const fieldName = field.name.value;
      const hasArguments = (field.arguments ?? []).length > 0;
      if (REPOSITORY_LISTS.has(fieldName) || (hasArguments && LOOKUPS.has(fieldName))) {
        refusal = `field ${fieldName}${hasArguments ? '(…)' : ''} reaches beyond the listed repositories`;
        return BREAK;
      }
      if (fieldName !== 'repository' || !hasArguments) return undefined;
      const arg = (name: string) => field.arguments?.find((a) => a.name.value === name)?.value;
      const ownerNode = arg('owner');
      const nameNode = arg('name');
      const owner = ownerNode === undefined ? undefined : stringValue(ownerNode, variables, operation);
      const name = nameNode === undefined ? undefined : stringValue(nameNode, variables, operation);
      if (owner === undefined || name === undefined) {
        refusal = 'a repository field without a string owner and name';
        return BREAK;
      }
      try {
        named.add(requireRepo(repos, owner, name, 'repository(owner, name)'));
      } catch (err) {
        refusal = err instanceof Refusal ? err.message : 'repository(owner, name) could not be read';
        return BREAK;
      }
      return undefined;
    },
  });
  if (refusal !== undefined) refuse(refusal);
  return named;
}

/** The conventional repository variables (`owner` + `name`|`repo`, or `repo` as owner/name). */
function checkVariables(variables: Variables | undefined, repos: ReadonlySet<string>, named: Set<string>) {
  if (variables === undefined) return;
  const read = (key: string): string | undefined => {
    if (!Object.hasOwn(variables, key)) return undefined;
    const value = variables[key];
    if (typeof value !== 'string') refuse(`variable ${key} is not a string`);
    return value;
  };
  const owner = read('owner');
  const name = read('name');
  const repo = read('repo');
  if (repo?.includes('/') === true) {
    const [repoOwner, repoName, ...rest] = repo.split('/');
    if (rest.length > 0) refuse('variable repo is not owner/name');
    named.add(requireRepo(repos, repoOwner!, repoName!, 'variable repo'));
  }
  const shortName = name ?? (repo?.includes('/') === false ? repo : undefined);
  if (owner !== undefined && shortName !== undefined) {
    named.add(requireRepo(repos, owner, shortName, 'variables owner/name'));
  }
}

function judgeUnsafe(body: Uint8Array, policy: GithubGraphqlPolicy): GithubGraphqlVerdict {
  const envelope = readEnvelope(body);
  let document: DocumentNode;
  try {
    document = parse(envelope.query, { noLocation: true, maxTokens: MAX_TOKENS });
  } catch {
    refuse('the query is not valid GraphQL');
  }
  const { operation, name, fragments } = readDocument(document, envelope.operationName);
  const kind: string = operation.operation;
  if (kind !== 'query' && kind !== 'mutation') refuse(`${kind} operations are not allowed`);
  const key = `${kind} ${name}`;
  if (!policy.operations.has(key)) refuse(`${key} is not in the box's githubGraphqlOperations`);
  if (kind === 'query') {
    for (const field of rootFields(operation.selectionSet, 'Query', fragments)) {
      if (!QUERY_ROOT_FIELDS.has(field.name.value)) {
        refuse(`root field ${field.name.value} is not allowed; a query starts at repository(owner, name)`);
      }
      if (field.name.value === 'repository' && (field.arguments ?? []).length === 0) {
        refuse('a root repository field needs owner and name');
      }
    }
  }
  const named = checkFields(document, operation, envelope.variables, policy.repos);
  checkVariables(envelope.variables, policy.repos, named);
  const forwarded = JSON.stringify({
    query: print(document),
    operationName: name,
    ...(envelope.variables === undefined ? {} : { variables: envelope.variables }),
  });
  return { allow: true, operation: key, repos: [...named].sort(), body: Buffer.from(forwarded) };
}

/** Judges one GraphQL request body. Never throws: anything unexpected is a refusal. */
export function judgeGithubGraphql(body: Uint8Array, policy: GithubGraphqlPolicy): GithubGraphqlVerdict {
  try {
    return judgeUnsafe(body, policy);
  } catch (err) {
    // Reasons quote what the box sent (names, owners): bounded, as they go to the audit and the 403.
    const reason = err instanceof Refusal ? err.message : 'the GraphQL request could not be judged';
    return { allow: false, reason: reason.length > 300 ? `${reason.slice(0, 299)}…` : reason };
  }
}
